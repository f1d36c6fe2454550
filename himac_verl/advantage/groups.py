"""Group-relative statistics as pure, vectorised torch functions (index_add / scatter_reduce, no loop
over samples). The estimators in :mod:`himac_verl.advantage.estimators` are compositions of these.

Conventions shared by all of them:

- the std is the unbiased one (Bessel's correction, divisor n - 1), as in verl's GRPO
  (``torch.std`` in ``compute_grpo_outcome_advantage``; ``group_mean_std`` divides by ``count - 1``),
  and the normalised value is ``(x - mean) / (std + eps)``, verl's formula;
- a group of one gets 0 by default (``lone="zero"``), where verl's GRPO gives it ``x / (1 + eps)`` (mean 0,
  std 1): a lone sample has no baseline, and a raw reward as "advantage" would push that sample's
  likelihood by the reward's scale. ``lone="raw"`` reproduces verl's (and verl-agent's) rule, for the
  per-turn statistics that mirror verl-agent (``AdvantageConfig.stats == "turn"``);
- a group of two or more whose values are all equal gets exactly 0 (tested via max == min, not by a
  rounding-prone mean), so no NaN even with eps = 0;
- failed episodes take part in no group (:func:`failure_dead_groups` finds the groups they leave with
  fewer than two healthy episodes; those get 0 throughout).
"""

from __future__ import annotations

import torch


def group_normalize(
    values: torch.Tensor,
    group: torch.Tensor,
    num_groups: int,
    norm_by_std: bool = True,
    eps: float = 1e-6,
    lone: str = "zero",
) -> torch.Tensor:
    """Group-relative score of each value.

    Args:
        values: [N] float, one value per member.
        group: [N] long in [0, num_groups); empty groups are allowed.
        num_groups: G.
        norm_by_std: divide the centred value by the group's unbiased std + eps; else centre only.
        eps: added to the std.
        lone: a group of one member gets ``"zero"``: 0; ``"raw"``: verl's mean 0 and std 1, i.e.
            ``x / (1 + eps)`` (norm_by_std) or ``x``.

    Returns:
        [N] same dtype as ``values``: ``(x - mean_g) / (std_g + eps)`` or ``x - mean_g``; groups of one as
        ``lone`` says; 0 for groups of two or more whose values are all equal.
    """
    if lone not in ("zero", "raw"):
        raise ValueError(f"lone is {lone!r}, expected 'zero' or 'raw'")
    if values.numel() == 0:
        return values.clone()
    dtype, device = values.dtype, values.device
    count = torch.zeros(num_groups, dtype=dtype, device=device).index_add_(0, group, torch.ones_like(values))
    total = torch.zeros(num_groups, dtype=dtype, device=device).index_add_(0, group, values)
    mean = total / count.clamp_min(1.0)
    centred = values - mean[group]
    vmax = torch.full((num_groups,), -torch.inf, dtype=dtype, device=device).scatter_reduce_(0, group, values, "amax")
    vmin = torch.full((num_groups,), torch.inf, dtype=dtype, device=device).scatter_reduce_(0, group, values, "amin")
    single = count < 2
    flat = ((vmax == vmin) & ~single) if lone == "raw" else (single | (vmax == vmin))
    if lone == "raw":  # verl: mean 0 and std 1 for a group of one
        centred = torch.where(single[group], values, centred)
    if norm_by_std:
        var = torch.zeros(num_groups, dtype=dtype, device=device).index_add_(0, group, centred * centred)
        std = (var / (count - 1.0).clamp_min(1.0)).sqrt()
        std = torch.where(single, torch.ones_like(std), std)
        centred = centred / (std[group] + eps)
    return torch.where(flat[group], torch.zeros_like(centred), centred)


def failure_dead_groups(
    episode: torch.Tensor,
    group: torch.Tensor,
    failed: torch.Tensor,
    num_episodes: int,
    num_groups: int,
) -> torch.Tensor:
    """Groups that lost at least one episode to failure and kept fewer than two healthy episodes.

    Such a group has no baseline left (or none at all): every sample of it gets advantage 0. A group that
    never had a failed episode is not dead, whatever its size (its statistics mode decides a group of one).

    Args:
        episode: [B] long in [0, num_episodes).
        group: [B] long, the sample's group in [0, num_groups), or -1 for samples that join no group.
            Members of one episode share it.
        failed: [B] bool, the sample's episode failed (equal within an episode).
        num_episodes: E.
        num_groups: G.

    Returns:
        [G] bool.
    """
    member = group >= 0
    if not bool((failed & member).any()):  # the common case: nothing failed, nothing to count
        return torch.zeros(num_groups, dtype=torch.bool, device=group.device)
    ep = episode[member]
    ep_group = torch.full((num_episodes,), -1, dtype=torch.long, device=group.device)
    ep_group[ep] = group[member]
    ep_failed = torch.zeros(num_episodes, dtype=torch.bool, device=group.device)
    ep_failed[ep] = failed[member]
    active = ep_group >= 0
    ones = torch.ones(num_episodes, dtype=torch.long, device=group.device)
    n_failed = torch.zeros(num_groups, dtype=torch.long, device=group.device).index_add_(
        0, ep_group[active & ep_failed], ones[active & ep_failed]
    )
    n_healthy = torch.zeros(num_groups, dtype=torch.long, device=group.device).index_add_(
        0, ep_group[active & ~ep_failed], ones[active & ~ep_failed]
    )
    return (n_failed > 0) & (n_healthy < 2)


def episode_group_advantage(
    value: torch.Tensor,
    episode: torch.Tensor,
    group: torch.Tensor,
    num_episodes: int,
    num_groups: int,
    norm_by_std: bool = True,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Group-relative advantage over UNIQUE episodes, broadcast back to every sample of the episode.

    An episode with 30 turn samples weighs the same as one with 3: its value enters its group once.

    Args:
        value: [B] float, the episode's value on each of its samples (equal within an episode).
        episode: [B] long in [0, num_episodes).
        group: [B] long, the sample's group in [0, num_groups), or -1 for samples that join no group
            (padding, other roles, the macro pass's executor samples). Members of one episode share it.
        num_episodes: E.
        num_groups: G.

    Returns:
        [B] float, the episode's advantage on each member sample, 0 on non-members.
    """
    member = group >= 0
    ep = episode[member]
    ep_group = torch.full((num_episodes,), -1, dtype=torch.long, device=value.device)
    ep_group[ep] = group[member]
    ep_value = torch.zeros(num_episodes, dtype=value.dtype, device=value.device)
    ep_value[ep] = value[member]
    active = ep_group >= 0
    ep_adv = torch.zeros_like(ep_value)
    ep_adv[active] = group_normalize(ep_value[active], ep_group[active], num_groups, norm_by_std, eps)
    return torch.where(member, ep_adv[episode], torch.zeros_like(value))


def discounted_step_returns(
    step_reward: torch.Tensor,
    episode: torch.Tensor,
    turn: torch.Tensor,
    member: torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    """Discounted return-to-go of each member turn within its own episode.

    R_t = sum_{k >= t} gamma^(k - t) r_k over the same episode's member turns ordered by ``turn``
    (k and t count positions in that order, so a gap in the turn numbers is not a skipped step).

    Args:
        step_reward: [B] float, this turn's env reward.
        episode: [B] long.
        turn: [B] long, unique within an episode among members.
        member: [B] bool, the samples that take part (non-members get 0 and are not summed).
        gamma: discount in [0, 1].

    Returns:
        [B] float.

    Episodes are laid out as rows of an [E', L] matrix (L = longest member episode, in turns) and
    multiplied by the [L, L] discount matrix, one matmul instead of a scan; memory is O(E' L + L^2).
    """
    out = torch.zeros_like(step_reward)
    rows = torch.nonzero(member).squeeze(1)
    if rows.numel() == 0:
        return out
    ep, tr = episode[rows], turn[rows]
    order = torch.argsort(ep * (int(tr.max()) + 1) + tr)
    rows, ep = rows[order], ep[order]
    _, ep_compact, counts = torch.unique_consecutive(ep, return_inverse=True, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    pos = torch.arange(rows.numel(), device=rows.device) - starts[ep_compact]
    length = int(counts.max())
    rewards = torch.zeros(counts.numel(), length, dtype=step_reward.dtype, device=step_reward.device)
    rewards[ep_compact, pos] = step_reward[rows]
    steps = torch.arange(length, device=step_reward.device)
    lag = steps[None, :] - steps[:, None]  # [t, k] = k - t
    discount = torch.where(
        lag >= 0,
        torch.tensor(gamma, dtype=step_reward.dtype, device=step_reward.device) ** lag.clamp_min(0),
        torch.zeros((), dtype=step_reward.dtype, device=step_reward.device),
    )
    returns = rewards @ discount.T  # [e, t] = sum_k rewards[e, k] * discount[t, k]
    out[rows] = returns[ep_compact, pos]
    return out


def broadcast_to_tokens(scalar: torch.Tensor, response_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B] per-sample value -> [B, T] on the response tokens, 0 where response_mask is 0.

    One product with the mask as it comes (long, bool or float), like verl's GRPO; values are finite,
    so masked tokens are exactly +-0."""
    out = scalar.to(device=response_mask.device, dtype=dtype).unsqueeze(-1) * response_mask
    return out if out.dtype == dtype else out.to(dtype)
