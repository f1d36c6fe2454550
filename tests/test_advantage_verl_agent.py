"""The flat baselines reproduce verl-agent's published advantages (config ``stats="turn", penalty="turn"``).

verl-agent (github.com/langfengQ/verl-agent) trains flat agents with one sample per turn. Its arithmetic,
transcribed here into an independent, deliberately plain reference (Python loops over samples, float64):

- every turn sample gets ``token_level_scores`` = its episode's env reward sum placed at the last response
  token; ``apply_invalid_action_penalty`` then subtracts 0.1 at that token on the turn whose action was
  invalid. A sample's score (its token scores summed) is therefore ``episode env reward - 0.1 * invalid``;
- GRPO (``compute_grpo_outcome_advantage(..., compute_mean_std_cross_all_data=True)``): ``id2score[index]``
  collects the score of EVERY sample of the task (turn samples, not episodes); a task with one score gets
  mean 0 and std 1, otherwise ``torch.mean`` and ``torch.std`` (unbiased); the advantage is
  ``(s - mean) / (std + 1e-6)`` or ``s - mean``;
- GiGPO (``compute_gigpo_outcome_advantage``, ``mode="mean_std_norm"`` = our norm_by_std True,
  ``"mean_norm"`` = False): episode part as GRPO above; step returns are the discounted env-reward returns
  within each trajectory (``running = r_t + gamma * running`` backwards), then the invalid turn's step
  return gets -0.1; step groups are the samples with an identical anchor observation within one task
  index; a step group of one gets mean = its score and std 1 (so 0); the advantage is
  ``episode part + step_advantage_w * step part``.

verl-agent's quirks, reproduced on purpose:

- ALFWorld's and WebShop's env rewards carry no per-step cost (10 on success, else 0), so their episode
  reward holds no penalty: the -0.1 lives only on the invalid turn's sample;
- Sokoban's env charges -0.1 per step, including the no-op step of an invalid action, so an invalid Sokoban
  turn costs -0.2 in all: -0.1 inside the episode reward (on every turn of the episode) and -0.1 more on
  that turn. In our contract its step_reward is -0.2 and its penalty -0.1;
- a group of one SAMPLE gets its raw score (``s / (1 + 1e-6)``, or ``s`` mean-only) at episode level, and 0
  at GiGPO's step level; a task with one trajectory of several turns is normalised over those turns;
- long episodes weigh more: every turn sample enters the task's statistics once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from himac_verl.advantage import (
    AdvantageConfig,
    SampleFields,
    compute_advantage,
    episode_grpo_scalar,
    gigpo_scalar,
)

COEF = 0.1  # verl-agent's invalid_action_penalty_coef
GAMMA = 0.95
EPS = 1e-6
VERL_AGENT = AdvantageConfig(stats="turn", penalty="turn", gamma=GAMMA, step_weight=1.0, eps=EPS)


@dataclass(frozen=True)
class Row:
    """One turn sample as verl-agent sees it: task index, trajectory uid, anchor obs, env reward, validity."""

    task: str
    traj: str
    obs: str
    env_reward: float
    invalid: bool


def trajectory(task: str, traj: str, turns: list[tuple[str, float, bool]]) -> list[Row]:
    return [Row(task, traj, obs, r, invalid) for obs, r, invalid in turns]


# ------------------------------------------------------------------------------------ the reference
def _mean_std(xs: list[float], lone_mean_is_score: bool) -> tuple[float, float]:
    if len(xs) == 1:
        return (xs[0] if lone_mean_is_score else 0.0), 1.0
    t = torch.tensor(xs, dtype=torch.float64)
    return float(torch.mean(t)), float(torch.std(t))


def _normalise(scores: list[float], keys: list, norm_by_std: bool, lone_mean_is_score: bool) -> list[float]:
    id2score: dict = {}
    for s, k in zip(scores, keys):
        id2score.setdefault(k, []).append(s)
    stats = {k: _mean_std(v, lone_mean_is_score) for k, v in id2score.items()}
    out = []
    for s, k in zip(scores, keys):
        mean, std = stats[k]
        out.append((s - mean) / (std + EPS) if norm_by_std else s - mean)
    return out


def verl_agent_reference(batch: list[Row], norm_by_std: bool, gigpo: bool, gamma: float = GAMMA,
                         w: float = 1.0) -> list[float]:
    """verl-agent's per-sample advantage of each row (rows of a trajectory in turn order in ``batch``)."""
    episode_reward: dict[str, float] = {}
    for row in batch:
        episode_reward[row.traj] = episode_reward.get(row.traj, 0.0) + row.env_reward
    scores = []
    for row in batch:
        score = episode_reward[row.traj]  # token_level_scores: the episode reward at the last token
        if row.invalid:
            score -= COEF  # apply_invalid_action_penalty
        scores.append(score)
    episode_adv = _normalise(scores, [row.task for row in batch], norm_by_std, lone_mean_is_score=False)
    if not gigpo:
        return episode_adv
    step_returns = [0.0] * len(batch)
    for traj in dict.fromkeys(row.traj for row in batch):
        running = 0.0
        for i in reversed([i for i, row in enumerate(batch) if row.traj == traj]):
            running = batch[i].env_reward + gamma * running
            step_returns[i] = running
    for i, row in enumerate(batch):
        if row.invalid:
            step_returns[i] -= COEF
    step_adv = _normalise(step_returns, [(row.task, row.obs) for row in batch], norm_by_std,
                          lone_mean_is_score=True)
    return [e + w * s for e, s in zip(episode_adv, step_adv)]


# ------------------------------------------------------------------------ the same batch, our contract
def contract_samples(batch: list[Row]) -> list[dict]:
    """Our sample contract for the rows: step_reward = env reward + penalty, episode_return its sum."""
    turn_of: dict[str, int] = {}
    totals: dict[str, tuple[float, float]] = {}
    for row in batch:
        penalty = -COEF if row.invalid else 0.0
        ret, pen = totals.get(row.traj, (0.0, 0.0))
        totals[row.traj] = (ret + row.env_reward + penalty, pen + penalty)
    out = []
    for row in batch:
        turn_of[row.traj] = turn_of.get(row.traj, 0) + 1
        penalty = -COEF if row.invalid else 0.0
        ret, pen = totals[row.traj]
        out.append({
            "role": "flat", "task_uid": row.task, "blueprint_uid": "", "episode_uid": row.traj, "pass": "micro",
            "turn": turn_of[row.traj], "subgoal_index": -1, "step_reward": row.env_reward + penalty,
            "episode_return": ret, "won": ret > 5, "anchor": row.obs, "penalty": penalty, "episode_penalty": pen,
            "failed": False,
        })
    return out


def ours(batch: list[Row], name: str, norm_by_std: bool, **overrides) -> list[float]:
    fields = SampleFields.from_extra_fields(contract_samples(batch))
    config = AdvantageConfig(**{**VERL_AGENT.__dict__, "norm_by_std": norm_by_std, **overrides})
    scalar = (gigpo_scalar if name == "gigpo" else episode_grpo_scalar)(fields, config)
    # the public entry gives the same values, in float32 on the response tokens
    mask = torch.ones(len(batch), 3)
    adv, _ = compute_advantage(name, fields, mask, config)
    torch.testing.assert_close(adv, scalar.float()[:, None] * mask)
    return scalar.tolist()


def check(batch: list[Row], name: str, norm_by_std: bool) -> list[float]:
    got = ours(batch, name, norm_by_std)
    want = verl_agent_reference(batch, norm_by_std, gigpo=name == "gigpo")
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    return got


# ----------------------------------------------------------------------------- hand-computed batch
# ALFWorld-like (env reward 10 on success, else 0; the invalid turn keeps the state, so obs repeats).
# Task A: a1 (s0, s1) succeeds in 2 turns; a2 (s0 invalid, s0, s2) fails in 3; a3 (s0) fails in 1.
# Task B: one trajectory b1 of 2 turns (s0 invalid, s0) that succeeds. Task C: one trajectory of 1 turn.
HAND = (
    trajectory("A", "a1", [("s0", 0.0, False), ("s1", 10.0, False)])
    + trajectory("A", "a2", [("s0", 0.0, True), ("s0", 0.0, False), ("s2", 0.0, False)])
    + trajectory("A", "a3", [("s0", 0.0, False)])
    + trajectory("B", "b1", [("s0", 0.0, True), ("s0", 10.0, False)])
    + trajectory("C", "c1", [("s0", 10.0, False)])
)
# Scores (episode env reward, -0.1 on the invalid turn):
#   A: a1 (10, 10), a2 (-0.1, 0, 0), a3 (0): six scores, sum 19.9, mean 3.316667;
#      deviations (6.683333, 6.683333, -3.416667, -3.316667 x3), squares 44.666944 x2 + 11.673611
#      + 11.000278 x3 = 134.008333, / 5 = 26.801667, std 5.177033
#      -> a1: 6.683333 / 5.177034 = 1.290958; a2 t1: -3.416667 / 5.177034 = -0.659966; the rest -0.640650
#   B: (9.9, 10): mean 9.95, std sqrt(2 * 0.05^2 / 1) = 0.0707107 -> -/+ 0.05 / 0.0707117 = -/+ 0.707097
#      (a single trajectory: its two turns are normalised against each other, by the penalty alone)
#   C: one score 10: mean 0, std 1 -> 10 / (1 + 1e-6) = 9.99999
HAND_GRPO_STD = [1.290958, 1.290958, -0.659966, -0.640650, -0.640650, -0.640650, -0.707097, 0.707097, 9.99999]
HAND_GRPO_MEAN = [6.683333, 6.683333, -3.416667, -3.316667, -3.316667, -3.316667, -0.05, 0.05, 10.0]
# GiGPO step returns (gamma 0.95, env rewards, then -0.1 on the invalid turn):
#   a1 (0, 10): (9.5, 10); a2 (0, 0, 0): (0, 0, 0) -> (-0.1, 0, 0); a3: (0); b1 (0, 10): (9.5, 10) -> (9.4, 10);
#   c1: (10).
# Step groups: (A, s0): a1 t1, a2 t1, a2 t2, a3 t1 = (9.5, -0.1, 0, 0): mean 2.35, deviations (7.15, -2.45,
#   -2.35, -2.35), squares 51.1225 + 6.0025 + 5.5225 x2 = 68.17, / 3 = 22.723333, std 4.766900
#   -> (1.499926, -0.513961, -0.492983, -0.492983);
#   (A, s1) = a1 t2 alone -> 0; (A, s2) = a2 t3 alone -> 0; (C, s0) alone -> 0;
#   (B, s0): (9.4, 10): mean 9.7, std sqrt(2 * 0.3^2) = 0.424264 -> -/+ 0.3 / 0.424265 = -/+ 0.707105
HAND_STEP_STD = [1.499926, 0.0, -0.513961, -0.492983, 0.0, -0.492983, -0.707105, 0.707105, 0.0]
HAND_STEP_MEAN = [7.15, 0.0, -2.45, -2.35, 0.0, -2.35, -0.3, 0.3, 0.0]


@pytest.mark.parametrize("norm_by_std, grpo, step", [(True, HAND_GRPO_STD, HAND_STEP_STD),
                                                      (False, HAND_GRPO_MEAN, HAND_STEP_MEAN)])
def test_hand_computed_batch(norm_by_std, grpo, step):
    np.testing.assert_allclose(check(HAND, "episode_grpo", norm_by_std), grpo, atol=2e-6)
    np.testing.assert_allclose(check(HAND, "gigpo", norm_by_std), [a + b for a, b in zip(grpo, step)], atol=4e-6)


def test_defaults_are_verl_agents_modes():
    default = AdvantageConfig()
    assert (default.stats, default.penalty, default.gamma, default.step_weight, default.eps) == ("turn", "turn",
                                                                                                 GAMMA, 1.0, EPS)


def test_group_of_one_sample_raw_score_at_episode_level_zero_at_step_level():
    batch = trajectory("solo", "x", [("s0", 7.0, False)])
    assert check(batch, "episode_grpo", True) == pytest.approx([7.0 / (1 + EPS)], abs=1e-12)
    assert check(batch, "gigpo", True) == pytest.approx([7.0 / (1 + EPS)], abs=1e-12)  # step part 0
    assert check(batch, "gigpo", False) == pytest.approx([7.0], abs=1e-12)


# ---------------------------------------------------------------------------- ALFWorld and Sokoban
ALFWORLD = (  # 10 on success else 0; tasks with unequal lengths, a single-trajectory task, invalid turns
    trajectory("pick/1", "p1", [("kitchen", 0.0, False), ("fridge", 0.0, True), ("fridge", 0.0, False),
                                ("counter", 10.0, False)])
    + trajectory("pick/1", "p2", [("kitchen", 0.0, True), ("kitchen", 0.0, True), ("kitchen", 0.0, False)])
    + trajectory("pick/1", "p3", [("kitchen", 0.0, False), ("sink", 10.0, False)])
    + trajectory("pick/1", "p4", [("kitchen", 0.0, False), ("hall", 0.0, False), ("hall", 0.0, True)])
    + trajectory("clean/7", "c1", [("kitchen", 0.0, False), ("sink", 0.0, True), ("sink", 0.0, False)])
)
SOKOBAN = (  # -0.1 per env step (an invalid action's no-op step too), +1 box on target, +10 solved
    trajectory("room/3", "k1", [("b0", -0.1, False), ("b1", 0.9, False), ("b2", 10.9, False)])
    + trajectory("room/3", "k2", [("b0", -0.1, True), ("b0", -0.1, False), ("b3", -0.1, False)])
    + trajectory("room/3", "k3", [("b0", -0.1, False), ("b1", 0.9, False)])
    + trajectory("room/5", "q1", [("c0", -0.1, True), ("c0", -0.1, True)])
    + trajectory("room/5", "q2", [("c0", -0.1, False), ("c1", -0.1, False), ("c2", -0.1, False), ("c3", -0.1, False)])
    + trajectory("room/8", "z1", [("d0", 10.9, False)])
)


@pytest.mark.parametrize("batch", [ALFWORLD, SOKOBAN], ids=["alfworld", "sokoban"])
@pytest.mark.parametrize("name", ["episode_grpo", "gigpo"])
@pytest.mark.parametrize("norm_by_std", [True, False])
def test_env_like_batches(batch, name, norm_by_std):
    check(batch, name, norm_by_std)


def test_sokoban_invalid_turn_costs_point_two():
    samples = contract_samples(SOKOBAN)
    k2 = [s for s in samples if s["episode_uid"] == "k2"]
    assert [s["step_reward"] for s in k2] == pytest.approx([-0.2, -0.1, -0.1])
    assert k2[0]["penalty"] == -0.1 and k2[0]["episode_penalty"] == -0.1
    assert k2[0]["episode_return"] == pytest.approx(-0.4)  # env return -0.3 plus the -0.1 penalty
    # ALFWorld: the env reward has no step cost, so the penalty is all there is on an invalid turn
    p2 = [s for s in contract_samples(ALFWORLD) if s["episode_uid"] == "p2"]
    assert [s["step_reward"] for s in p2] == pytest.approx([-0.1, -0.1, 0.0])


# ---------------------------------------------------------------------------------- random batches
def random_batch(seed: int) -> list[Row]:
    rng = np.random.default_rng(seed)
    sokoban = bool(seed % 2)
    trajs: list[list[Row]] = []
    for t in range(int(rng.integers(1, 5))):
        for e in range(int(rng.integers(1, 5))):  # includes single-trajectory tasks
            n = int(rng.integers(1, 8))
            won = rng.random() < 0.4
            turns = []
            for k in range(n):
                invalid = bool(rng.random() < 0.25)
                if sokoban:
                    r = -0.1 + (1.0 if rng.random() < 0.2 and not invalid else 0.0)
                    r += 10.0 if won and k == n - 1 else 0.0
                else:
                    r = 10.0 if won and k == n - 1 else 0.0
                turns.append((f"s{int(rng.integers(0, 4))}", r, invalid))
            trajs.append(trajectory(f"task{t}", f"task{t}/e{e}", turns))
    # interleave the trajectories (as a vectorised env batch does), each trajectory's turns in order
    cursors = [0] * len(trajs)
    batch = []
    while len(batch) < sum(map(len, trajs)):
        j = int(rng.integers(0, len(trajs)))
        if cursors[j] < len(trajs[j]):
            batch.append(trajs[j][cursors[j]])
            cursors[j] += 1
    return batch


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("name", ["episode_grpo", "gigpo"])
def test_random_batches_match_the_reference(seed, name):
    batch = random_batch(seed)
    for norm_by_std in (True, False):
        check(batch, name, norm_by_std)


def test_gigpo_step_weight_and_gamma_follow_the_reference():
    batch = random_batch(3)
    for gamma, w in ((0.5, 0.3), (1.0, 2.0)):
        got = ours(batch, "gigpo", True, gamma=gamma, step_weight=w)
        want = verl_agent_reference(batch, True, gigpo=True, gamma=gamma, w=w)
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)


def test_the_old_modes_differ_from_verl_agent():
    # sanity: the reference is sensitive to the modes (the equality above is not a coincidence)
    fields = SampleFields.from_extra_fields(contract_samples(HAND))
    want = verl_agent_reference(HAND, True, gigpo=False)
    for stats, penalty in (("episode", "episode"), ("episode", "turn"), ("turn", "episode")):
        got = episode_grpo_scalar(fields, AdvantageConfig(stats=stats, penalty=penalty)).tolist()
        assert not np.allclose(got, want, atol=1e-3), (stats, penalty)
    assert math.isclose(want[-1], 10 / (1 + EPS))
