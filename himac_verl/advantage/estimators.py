"""The three advantage estimators: ``himac``, ``episode_grpo`` (flat baseline) and ``gigpo``.

Each is a pure function ``(fields, response_mask, config) -> (advantages [B, T], returns [B, T])`` over a
validated :class:`SampleFields` batch. Following verl's GRPO family, ``returns`` equals ``advantages``
(there is no critic to fit). Per-sample scalars are computed in float64 and broadcast to the response
tokens in float32; masked tokens and padding rows are 0.

Every group-relative outcome term (macro, micro, GRPO/GiGPO episode level) is :func:`outcome_advantage`:
``config.stats`` picks per-turn or per-episode statistics, ``config.penalty`` where the invalid-action
penalty goes, and failed episodes are left out (docs/advantage.md has the formulas).
"""

from __future__ import annotations

import torch

from himac_verl.advantage.config import AdvantageConfig
from himac_verl.advantage.fields import EXECUTOR, FLAT, PLANNER, ROLES, FieldError, SampleFields
from himac_verl.advantage.groups import (
    broadcast_to_tokens,
    discounted_step_returns,
    episode_group_advantage,
    failure_dead_groups,
    group_normalize,
)

OUTPUT_DTYPE = torch.float32


def compute_himac_advantage(
    fields: SampleFields, response_mask: torch.Tensor, config: AdvantageConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """HiMAC's hierarchical advantage: macro for planner samples, micro for executor samples.

    - planner sample of task x (:func:`macro_advantage`; group = the planner episodes of x):
      A = (R_z - mean_x) / (std_x + eps), R_z = return of the greedy episode that scored blueprint z;
    - executor sample of the MICRO pass under blueprint z of task x (:func:`micro_advantage`; group =
      the micro-pass episodes of (x, z)): A = (R_e - mean_{x,z}) / (std_{x,z} + eps);
    - executor samples of the macro pass (the greedy scoring episodes) join no group: A = 0.

    Both terms are :func:`outcome_advantage` (``config.stats``: per-turn or per-episode statistics;
    ``config.penalty``: where the invalid-action penalty goes; failed episodes and the planners they
    scored get 0 and join no statistic), broadcast to the sample's response tokens.

    Args:
        fields: B samples with roles planner/executor only.
        response_mask: [B, T].
        config: norm_by_std, eps, stats, penalty.

    Returns:
        advantages [B, T] float32, returns [B, T] (= advantages).
    """
    _require_roles(fields, (PLANNER, EXECUTOR), "himac")
    bad = fields.is_real & (fields.role == PLANNER) & fields.is_micro
    if bad.any():
        i = int(torch.nonzero(bad)[0])
        raise FieldError(f"sample {i}: planner sample tagged pass 'micro'; blueprints are written in the macro pass")
    scalar = macro_advantage(fields, config) + micro_advantage(fields, config)  # disjoint supports
    advantages = broadcast_to_tokens(scalar, response_mask, OUTPUT_DTYPE)
    return advantages, advantages


def macro_advantage(fields: SampleFields, config: AdvantageConfig) -> torch.Tensor:
    """[B] planner samples' advantage: their blueprint's return normalised among the task's blueprints
    (the planner samples of one task_uid); 0 on every other sample. Paper: the macro advantage."""
    planner = fields.is_real & (fields.role == PLANNER)
    return outcome_advantage(fields, planner, fields.task, fields.num_tasks, config)


def micro_advantage(fields: SampleFields, config: AdvantageConfig) -> torch.Tensor:
    """[B] micro-pass executor samples' advantage: their episode's return normalised among the micro-pass
    executor samples of the same (task_uid, blueprint_uid); 0 on every other sample (macro-pass
    executors too). Paper: the micro advantage."""
    micro = fields.is_real & (fields.role == EXECUTOR) & fields.is_micro
    return outcome_advantage(fields, micro, fields.micro_group, fields.num_micro_groups, config)


def outcome_advantage(
    fields: SampleFields,
    member: torch.Tensor,
    group: torch.Tensor,
    num_groups: int,
    config: AdvantageConfig,
) -> torch.Tensor:
    """Group-relative outcome advantage of the member samples; 0 on the others.

    With R_e = episode_return, P_e = episode_penalty (both include the penalties), p_i = penalty:

    - ``penalty == "episode"``: score s_i = R_e, episode value v_e = R_e;
      ``penalty == "turn"``: s_i = (R_e - P_e) + p_i, v_e = R_e - P_e (the env return);
    - ``stats == "turn"``: A_i = norm_g(s_i), mean and unbiased std over all the group's live samples;
      a group of one sample gets s_i / (1 + eps) (norm_by_std) or s_i, verl's rule;
    - ``stats == "episode"``: A_i = norm_g(v_e) over the group's unique live episodes (a group of one
      episode: 0), plus p_i unscaled when ``penalty == "turn"``;
    - a group of two or more with all-equal values: norm part exactly 0;
    - failed samples get 0 and join no statistic; a group that lost an episode to failure and kept fewer
      than two healthy episodes gets 0 on all its samples (:func:`failure_dead_groups`).

    Args:
        fields: the batch.
        member: [B] bool, the samples that take part (real samples of the right role and pass).
        group: [B] long in [0, num_groups), the sample's group (read where ``member``).
        num_groups: G.
        config: norm_by_std, eps, stats, penalty.

    Returns:
        [B] float64.
    """
    group = live_groups(fields, member, group, num_groups)
    live = group >= 0
    env_return = fields.episode_return - fields.episode_penalty
    if config.stats == "episode":
        value = fields.episode_return if config.penalty == "episode" else env_return
        adv = episode_group_advantage(
            value, fields.episode, group, fields.num_episodes, num_groups, config.norm_by_std, config.eps
        )
        if config.penalty == "turn":
            adv = adv + torch.where(live, fields.penalty, torch.zeros_like(fields.penalty))
        return adv
    score = fields.episode_return if config.penalty == "episode" else env_return + fields.penalty
    adv = torch.zeros_like(score)
    adv[live] = group_normalize(score[live], group[live], num_groups, config.norm_by_std, config.eps, lone="raw")
    return adv


def live_groups(fields: SampleFields, member: torch.Tensor, group: torch.Tensor, num_groups: int) -> torch.Tensor:
    """[B] long: ``group`` where the sample takes part in its group's statistics, else -1.

    Out: non-members, samples of failed episodes, and every sample of a group that lost an episode to
    failure and kept fewer than two healthy episodes.
    """
    none = torch.full_like(group, -1)
    group = torch.where(member, group, none)
    dead = failure_dead_groups(fields.episode, group, fields.failed, fields.num_episodes, num_groups)
    live = member & ~fields.failed & ~dead[group.clamp_min(0)]
    return torch.where(live, group, none)


def compute_episode_grpo_advantage(
    fields: SampleFields, response_mask: torch.Tensor, config: AdvantageConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat GRPO over whole episodes: group = the episodes of one task.

    A = :func:`outcome_advantage` with group = the task's flat samples, broadcast to the response tokens.
    With ``stats="turn", penalty="turn"`` this is verl-agent's GRPO
    (``compute_grpo_outcome_advantage(..., compute_mean_std_cross_all_data=True)``).
    The ``pass`` field of flat samples is not used.

    Args:
        fields: B samples, all of role flat.
        response_mask: [B, T].
        config: norm_by_std, eps, stats, penalty.

    Returns:
        advantages [B, T] float32, returns [B, T] (= advantages).
    """
    _require_roles(fields, (FLAT,), "episode_grpo")
    scalar = episode_grpo_scalar(fields, config)
    advantages = broadcast_to_tokens(scalar, response_mask, OUTPUT_DTYPE)
    return advantages, advantages


def compute_gigpo_advantage(
    fields: SampleFields, response_mask: torch.Tensor, config: AdvantageConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """GiGPO (arXiv 2505.10978): episode-level plus anchor-state step-level group advantage.

    A = A_episode + w * A_step, with
    - A_episode: as ``episode_grpo``;
    - A_step: for each turn t of episode e, R_t = sum_{k >= t} gamma^(k - t) r_k over e's turns ordered by
      ``turn``, with r = step_reward (``penalty="episode"``), or r = step_reward - penalty (env rewards)
      and then R_t += penalty_t (``penalty="turn"``, verl-agent's order); turns are grouped by
      (task_uid, anchor) across all episodes of the task, every occurrence counting (a state revisited
      within one episode counts twice), and A_step = (R_t - mean_anchor) / (std_anchor + eps) over
      samples; an anchor group of one gives 0.
    - failed episodes join no group and get 0; so do all samples of a task that failures left with fewer
      than two healthy episodes (step part included).
    With ``stats="turn", penalty="turn"`` this is verl-agent's ``compute_gigpo_outcome_advantage``.

    Args:
        fields: B samples, all of role flat.
        response_mask: [B, T].
        config: norm_by_std, eps, gamma, step_weight (w), stats, penalty.

    Returns:
        advantages [B, T] float32, returns [B, T] (= advantages).
    """
    _require_roles(fields, (FLAT,), "gigpo")
    scalar = gigpo_scalar(fields, config)
    advantages = broadcast_to_tokens(scalar, response_mask, OUTPUT_DTYPE)
    return advantages, advantages


def episode_grpo_scalar(fields: SampleFields, config: AdvantageConfig) -> torch.Tensor:
    """[B] float64 per-sample value of ``episode_grpo`` (group = the task's real flat samples)."""
    return outcome_advantage(fields, fields.is_real, fields.task, fields.num_tasks, config)


def gigpo_scalar(fields: SampleFields, config: AdvantageConfig) -> torch.Tensor:
    """[B] float64 per-sample value of ``gigpo``: episode part + w * step part (see
    :func:`compute_gigpo_advantage`)."""
    episode_part = episode_grpo_scalar(fields, config)
    live = live_groups(fields, fields.is_real, fields.task, fields.num_tasks) >= 0
    turn_penalty = config.penalty == "turn"
    reward = fields.step_reward - fields.penalty if turn_penalty else fields.step_reward
    step_return = discounted_step_returns(reward, fields.episode, fields.turn, live, config.gamma)
    if turn_penalty:
        step_return = step_return + fields.penalty
    step_part = torch.zeros_like(step_return)
    step_part[live] = group_normalize(
        step_return[live], fields.anchor_group[live], fields.num_anchor_groups, config.norm_by_std, config.eps
    )
    return episode_part + config.step_weight * step_part


def _require_roles(fields: SampleFields, allowed: tuple[int, ...], estimator: str) -> None:
    ok = torch.zeros_like(fields.is_padding)
    for code in allowed:
        ok |= fields.role == code
    if not bool(ok.all()):
        i = int(torch.nonzero(~ok)[0])
        names = ", ".join(ROLES[c] for c in allowed)
        hint = " (use episode_grpo or gigpo for flat samples)" if estimator == "himac" else " (use himac)"
        raise FieldError(
            f"sample {i}: role {ROLES[int(fields.role[i])]!r} cannot go to estimator {estimator!r}, "
            f"which takes roles: {names}{hint}"
        )
