"""Hand-computed batches for himac, episode_grpo and gigpo (std and mean-only), plus the dispatcher and the
verl-facing registered functions.

The hand-computed batches below were written for per-episode statistics; they run with ``stats="episode"``
(the per-turn default is covered here by its own hand-computed batch and in test_advantage_verl_agent.py).
Their samples carry no penalties, so the ``penalty`` mode does not change them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from himac_verl.advantage import (
    AdvantageConfig,
    FieldError,
    SampleFields,
    compute_advantage,
    discounted_step_returns,
    episode_grpo_scalar,
    gigpo_scalar,
    group_normalize,
    macro_advantage,
    micro_advantage,
)

T = 6  # response tokens per sample
EPS = 1e-6
R3 = math.sqrt(3.0)
R2 = math.sqrt(2.0)


def sample(role, task, bp, ep, pass_, turn, ret, r=0.0, anchor="", won=False, sub=-1, pen=0.0, ep_pen=0.0,
           failed=False):
    return {
        "role": role,
        "task_uid": task,
        "blueprint_uid": bp,
        "episode_uid": ep,
        "pass": pass_,
        "turn": turn,
        "subgoal_index": sub,
        "step_reward": r,
        "episode_return": ret,
        "won": won,
        "anchor": anchor,
        "penalty": pen,
        "episode_penalty": ep_pen,
        "failed": failed,
        "reward_extra_info": {},  # extra keys are allowed and ignored
    }


def P(task, bp, ep, ret):
    return sample("planner", task, bp, ep, "macro", 0, ret)


def X(task, bp, ep, pass_, turn, ret):
    return sample("executor", task, bp, ep, pass_, turn, ret, sub=0)


# ------------------------------------------------------------------------------------------ himac batch
# Task tA: 3 blueprints scored by greedy episodes (returns 0, 4, 8; each planner is turn 0 of its scoring
# episode gA*, as the contract numbers it); best bA3 executed 3 times (micro pass),
# plus one micro episode under bA2. Task tB: 2 blueprints with equal returns, 2 micro episodes under bB1.
# Task tC: a single blueprint. Row 14 has no response tokens, row 22 is padding (copy of row 9).
HIMAC_SAMPLES = [
    P("tA", "bA1", "gA1", 0.0),  # 0
    P("tA", "bA2", "gA2", 4.0),  # 1
    P("tA", "bA3", "gA3", 8.0),  # 2
    X("tA", "bA1", "gA1", "macro", 1, 0.0),  # 3  greedy scoring episodes: never trained
    X("tA", "bA1", "gA1", "macro", 2, 0.0),  # 4
    X("tA", "bA2", "gA2", "macro", 1, 4.0),  # 5
    X("tA", "bA3", "gA3", "macro", 1, 8.0),  # 6
    X("tA", "bA3", "gA3", "macro", 2, 8.0),  # 7
    X("tA", "bA3", "gA3", "macro", 3, 8.0),  # 8
    X("tA", "bA3", "mA1", "micro", 1, 10.0),  # 9   mA1: 3 turns, return 10
    X("tA", "bA3", "mA1", "micro", 2, 10.0),  # 10
    X("tA", "bA3", "mA1", "micro", 3, 10.0),  # 11
    X("tA", "bA3", "mA2", "micro", 1, 0.0),  # 12  mA2: 1 turn, return 0
    X("tA", "bA3", "mA3", "micro", 1, 0.0),  # 13  mA3: 2 turns, return 0
    X("tA", "bA3", "mA3", "micro", 2, 0.0),  # 14  (no response tokens)
    X("tA", "bA2", "mA4", "micro", 1, 5.0),  # 15  alone in micro group (tA, bA2)
    P("tB", "bB1", "pB1", 10.0),  # 16
    P("tB", "bB2", "pB2", 10.0),  # 17
    X("tB", "bB1", "mB1", "micro", 1, 2.0),  # 18
    X("tB", "bB1", "mB1", "micro", 2, 2.0),  # 19
    X("tB", "bB1", "mB2", "micro", 1, 6.0),  # 20
    P("tC", "bC1", "pC1", 3.0),  # 21 alone in its macro group
    X("tA", "bA3", "mA1", "micro", 1, 10.0),  # 22 padding row (copy of 9)
]
HIMAC_PADDING = [False] * 22 + [True]

# std-normalised (unbiased std, eps 1e-6):
# macro tA: returns (0, 4, 8): mean 4, std sqrt((16 + 0 + 16) / 2) = 4 -> (-4/4, 0, 4/4) = (-1, 0, 1)
# micro (tA, bA3): UNIQUE episodes (10, 0, 0): mean 10/3, var ((20/3)^2 + 2 (10/3)^2) / 2 = 100/3,
#   std 10/sqrt(3) -> mA1 (20/3) / (10/sqrt 3) = 2/sqrt(3) = 1.1547; mA2, mA3 -(10/3)/(10/sqrt 3) = -1/sqrt(3)
#   (weighting by samples would give (10,10,10,0,0,0): mean 5, a different answer)
# micro (tA, bA2): one episode -> 0;  macro tB: (10, 10) all equal -> 0;  macro tC: one -> 0
# micro (tB, bB1): (2, 6): mean 4, std sqrt((4 + 4) / 1) = 2 sqrt(2) -> -/+ 2 / (2 sqrt 2) = -/+ 1/sqrt(2)
S_MA1, S_MA0 = 2 / R3, -1 / R3
HIMAC_STD = [
    -4 / (4 + EPS), 0.0, 4 / (4 + EPS),  # planners tA
    0, 0, 0, 0, 0, 0,  # greedy macro-pass executor samples
    S_MA1, S_MA1, S_MA1, S_MA0, S_MA0, S_MA0,  # micro (tA, bA3); row 14's tokens are masked anyway
    0.0,  # mA4 alone
    0.0, 0.0,  # tB planners, equal
    -1 / R2, -1 / R2, 1 / R2,  # micro (tB, bB1)
    0.0,  # tC planner alone
    0.0,  # padding
]
# mean-only: tA planners (0-4, 4-4, 8-4) = (-4, 0, 4); (tA, bA3): 10 - 10/3 = 20/3, 0 - 10/3 = -10/3;
# (tB, bB1): 2 - 4 = -2, 6 - 4 = 2; the rest 0.
HIMAC_MEAN = [-4, 0, 4, 0, 0, 0, 0, 0, 0, 20 / 3, 20 / 3, 20 / 3, -10 / 3, -10 / 3, -10 / 3, 0, 0, 0, -2, -2, 2, 0, 0]


def _mask(n, empty_rows=(), lengths=None):
    """[n, T]: row i has its first lengths[i] tokens (default 3 + i % 4) on; empty_rows have none."""
    mask = torch.zeros(n, T, dtype=torch.float32)
    for i in range(n):
        k = 0 if i in empty_rows else (lengths[i] if lengths else 3 + i % 4)
        mask[i, :k] = 1.0
    return mask


def _expected(scalars, mask):
    return torch.tensor(scalars, dtype=torch.float64).unsqueeze(-1) * mask.double()


@pytest.mark.parametrize("norm_by_std, scalars", [(True, HIMAC_STD), (False, HIMAC_MEAN)])
def test_himac_hand_computed(norm_by_std, scalars):
    fields = SampleFields.from_extra_fields(HIMAC_SAMPLES, is_padding=HIMAC_PADDING)
    mask = _mask(len(HIMAC_SAMPLES), empty_rows=(14,))
    mask[22] = 1.0  # even a padding row with live tokens gets 0
    adv, ret = compute_advantage("himac", fields, mask, {"norm_by_std": norm_by_std, "stats": "episode"})
    assert adv.shape == (23, T) and adv.dtype == torch.float32
    torch.testing.assert_close(adv.double(), _expected(scalars, mask), atol=1e-5, rtol=0)
    assert torch.equal(adv, ret)
    assert torch.all(adv[14] == 0) and torch.all(adv[22] == 0)
    assert torch.all(adv[mask == 0] == 0)


# stats="turn" (the default) on the same batch: every turn sample counts once; a group of ONE SAMPLE gets
# its raw score / (1 + eps) (verl's mean 0, std 1), a group of one episode with several samples is normalised.
# macro tA: one sample per planner -> as above (-1, 0, 1);
# micro (tA, bA3): samples (10, 10, 10, 0, 0, 0): mean 5, var 6 * 25 / 5 = 30 -> +/- 5 / sqrt(30) = +/- 0.91287
# micro (tA, bA2): the single sample mA4 (5.0) -> 5 / (1 + eps);  macro tB: (10, 10) -> 0
# micro (tB, bB1): samples (2, 2, 6): mean 10/3, var ((4/3)^2 * 2 + (8/3)^2) / 2 = 16/3, std 4/sqrt 3
#   -> 2: (-4/3) / (4/sqrt 3) = -1/sqrt 3; 6: (8/3) / (4/sqrt 3) = 2/sqrt 3
# macro tC: the single planner (3.0) -> 3 / (1 + eps)
R30 = math.sqrt(30.0)
HIMAC_TURN_STD = [
    -4 / (4 + EPS), 0.0, 4 / (4 + EPS),
    0, 0, 0, 0, 0, 0,
    5 / R30, 5 / R30, 5 / R30, -5 / R30, -5 / R30, -5 / R30,
    5 / (1 + EPS),
    0.0, 0.0,
    -1 / R3, -1 / R3, 2 / R3,
    3 / (1 + EPS),
    0.0,
]
# mean-only: (tA, bA3) +/- 5; (tA, bA2) 5 (raw); (tB, bB1) 2 - 10/3 = -4/3, 6 - 10/3 = 8/3; tC 3 (raw)
HIMAC_TURN_MEAN = [-4, 0, 4, 0, 0, 0, 0, 0, 0, 5, 5, 5, -5, -5, -5, 5, 0, 0, -4 / 3, -4 / 3, 8 / 3, 3, 0]


@pytest.mark.parametrize("norm_by_std, scalars", [(True, HIMAC_TURN_STD), (False, HIMAC_TURN_MEAN)])
def test_himac_hand_computed_turn_stats(norm_by_std, scalars):
    fields = SampleFields.from_extra_fields(HIMAC_SAMPLES, is_padding=HIMAC_PADDING)
    mask = _mask(len(HIMAC_SAMPLES), empty_rows=(14,))
    mask[22] = 1.0
    adv, _ = compute_advantage("himac", fields, mask, {"norm_by_std": norm_by_std})  # stats="turn" by default
    torch.testing.assert_close(adv.double(), _expected(scalars, mask), atol=1e-5, rtol=0)
    assert torch.all(adv[22] == 0)


# ------------------------------------------------------------------------------------------- flat batch
def F(task, ep, turn, anchor, r, ret):
    return sample("flat", task, "", ep, "micro", turn, ret, r=r, anchor=anchor)


# gamma = 0.5. Task f1: e1 (s0, s1, s2; r 0, 0, 10), e2 (s0, s3; r 0, 0), e3 revisits s0
# (s0, s1, s0, s2; r 0, 0, 0, 10), listed out of turn order. Task f2: g1 (s0; r 1), g2 (s0, s1; r 3, 0).
# Row 12 is padding (copy of g1's turn, which would also repeat a turn), row 4 (e2 t2) has no tokens.
FLAT_SAMPLES = [
    F("f1", "e1", 1, "s0", 0.0, 10.0),  # 0  R = 0 + .5*0 + .25*10 = 2.5
    F("f1", "e1", 2, "s1", 0.0, 10.0),  # 1  R = 0 + .5*10 = 5
    F("f1", "e1", 3, "s2", 10.0, 10.0),  # 2  R = 10
    F("f1", "e2", 1, "s0", 0.0, 0.0),  # 3  R = 0
    F("f1", "e2", 2, "s3", 0.0, 0.0),  # 4  R = 0 (no response tokens)
    F("f1", "e3", 4, "s2", 10.0, 10.0),  # 5  R = 10
    F("f1", "e3", 2, "s1", 0.0, 10.0),  # 6  R = 0 + .5*0 + .25*10 = 2.5
    F("f1", "e3", 1, "s0", 0.0, 10.0),  # 7  R = .125*10 = 1.25
    F("f1", "e3", 3, "s0", 0.0, 10.0),  # 8  R = 0 + .5*10 = 5
    F("f2", "g1", 1, "s0", 1.0, 1.0),  # 9  R = 1
    F("f2", "g2", 1, "s0", 3.0, 3.0),  # 10 R = 3 + .5*0 = 3
    F("f2", "g2", 2, "s1", 0.0, 3.0),  # 11 R = 0
    F("f2", "g1", 1, "s0", 1.0, 1.0),  # 12 padding (copy of 9)
]
FLAT_PADDING = [False] * 12 + [True]
FLAT_STEP_RETURNS = [2.5, 5, 10, 0, 0, 10, 2.5, 1.25, 5, 1, 3, 0, 0]

# Episode level, std: f1 unique returns (10, 0, 10): mean 20/3, var ((10/3)^2*2 + (20/3)^2)/2 = 100/3,
# std 10/sqrt 3 -> e1, e3: (10/3)/(10/sqrt 3) = 1/sqrt 3; e2: -2/sqrt 3.  f2 (1, 3): mean 2, std sqrt 2 -> -/+ 1/sqrt 2.
E1, E2, G1 = 1 / R3, -2 / R3, -1 / R2
EP_STD = [E1, E1, E1, E2, E2, E1, E1, E1, E1, G1, -G1, -G1, 0.0]
# mean-only: f1 (10 - 20/3, 0 - 20/3) = (10/3, -20/3); f2 (1 - 2, 3 - 2) = (-1, 1)
EP_MEAN = [10 / 3] * 3 + [-20 / 3] * 2 + [10 / 3] * 4 + [-1, 1, 1, 0]

# Step level, anchor groups (task, anchor), every occurrence counts:
# (f1, s0): rows 0, 3, 7, 8 with R (2.5, 0, 1.25, 5): mean 8.75/4 = 2.1875, centred (.3125, -2.1875, -.9375,
#   2.8125), squares sum .09765625 + 4.78515625 + .87890625 + 7.91015625 = 13.671875, var 13.671875/3,
#   std 2.1347814 -> (.146385, -1.024695, -.439155, 1.317465)
# (f1, s1): rows 1, 6, R (5, 2.5): mean 3.75, std sqrt(2 * 1.25^2) = 1.767767 -> +/- 1/sqrt 2
# (f1, s2): rows 2, 5, R (10, 10) -> 0;  (f1, s3): row 4 alone -> 0
# (f2, s0): rows 9, 10, R (1, 3) -> -/+ 1/sqrt 2;  (f2, s1): row 11 alone -> 0
S0_STD = 2.1347814
STEP_STD = [
    0.3125 / S0_STD, 1 / R2, 0.0, -2.1875 / S0_STD, 0.0, 0.0, -1 / R2, -0.9375 / S0_STD, 2.8125 / S0_STD,
    -1 / R2, 1 / R2, 0.0, 0.0,
]
STEP_MEAN = [0.3125, 1.25, 0, -2.1875, 0, 0, -1.25, -0.9375, 2.8125, -1, 1, 0, 0]


def _flat_fields():
    return SampleFields.from_extra_fields(FLAT_SAMPLES, is_padding=FLAT_PADDING)


def test_discounted_step_returns_hand_computed():
    f = _flat_fields()
    got = discounted_step_returns(f.step_reward, f.episode, f.turn, f.is_real, gamma=0.5)
    torch.testing.assert_close(got, torch.tensor(FLAT_STEP_RETURNS, dtype=torch.float64))
    # default gamma 0.95 on e1 (r 0, 0, 10): (0.95^2 * 10, 0.95 * 10, 10) = (9.025, 9.5, 10)
    got = discounted_step_returns(f.step_reward, f.episode, f.turn, f.is_real, gamma=AdvantageConfig().gamma)
    torch.testing.assert_close(got[:3], torch.tensor([9.025, 9.5, 10.0], dtype=torch.float64))


@pytest.mark.parametrize("norm_by_std, scalars", [(True, EP_STD), (False, EP_MEAN)])
def test_episode_grpo_hand_computed(norm_by_std, scalars):
    mask = _mask(len(FLAT_SAMPLES), empty_rows=(4,))
    mask[12] = 1.0
    adv, ret = compute_advantage("episode_grpo", _flat_fields(), mask, {"norm_by_std": norm_by_std, "stats": "episode"})
    torch.testing.assert_close(adv.double(), _expected(scalars, mask), atol=1e-5, rtol=0)
    assert torch.equal(adv, ret) and torch.all(adv[4] == 0) and torch.all(adv[12] == 0)


@pytest.mark.parametrize(
    "norm_by_std, ep, step", [(True, EP_STD, STEP_STD), (False, EP_MEAN, STEP_MEAN)]
)
@pytest.mark.parametrize("w", [1.0, 0.5])
def test_gigpo_hand_computed(norm_by_std, ep, step, w):
    mask = _mask(len(FLAT_SAMPLES), empty_rows=(4,))
    mask[12] = 1.0
    config = {"norm_by_std": norm_by_std, "gamma": 0.5, "step_weight": w, "stats": "episode"}
    adv, _ = compute_advantage("gigpo", _flat_fields(), mask, config)
    scalars = [a + w * b for a, b in zip(ep, step)]
    torch.testing.assert_close(adv.double(), _expected(scalars, mask), atol=1e-5, rtol=0)
    # e.g. row 8 (e3 turn 3, std): 1/sqrt 3 + w * 2.8125 / 2.1347814 = 0.57735 + w * 1.31747
    if norm_by_std and w == 1.0:
        assert adv[8, 0].item() == pytest.approx(0.57735 + 1.31747, abs=1e-4)
    assert torch.all(adv[12] == 0)


def test_group_normalize_edges():
    # a group of one, an all-equal group (0.1 * 3 does not average back to 0.1 exactly), a regular one
    values = torch.tensor([7.0, 0.1, 0.1, 0.1, 1.0, 3.0], dtype=torch.float64)
    group = torch.tensor([0, 1, 1, 1, 2, 2])
    for eps in (0.0, 1e-6):
        out = group_normalize(values, group, 3, norm_by_std=True, eps=eps)
        assert torch.equal(out[:4], torch.zeros(4, dtype=torch.float64)) and not out.isnan().any()
        # (1, 3): mean 2, unbiased std sqrt 2
        torch.testing.assert_close(out[4:], torch.tensor([-1, 1], dtype=torch.float64) / (R2 + eps))
    out = group_normalize(values, group, 3, norm_by_std=False)
    assert torch.equal(out, torch.tensor([0, 0, 0, 0, -1.0, 1.0], dtype=torch.float64))


def test_unbiased_std_matches_verl_grpo():
    from verl.trainer.ppo.core_algos import compute_grpo_vectorized_outcome_advantage as verl_grpo

    rng = np.random.default_rng(0)
    scores = torch.tensor(rng.normal(size=12), dtype=torch.float32)
    uid = np.array(["a"] * 5 + ["b"] * 4 + ["c"] * 3, dtype=object)
    rewards = torch.zeros(12, 3)
    rewards[:, -1] = scores
    theirs, _ = verl_grpo(rewards, torch.ones(12, 3), uid)
    ours = group_normalize(scores.double(), torch.tensor([0] * 5 + [1] * 4 + [2] * 3), 3, True, 1e-6)
    torch.testing.assert_close(ours.float(), theirs[:, 0], atol=1e-5, rtol=1e-5)


def test_unknown_estimator_and_bad_inputs():
    fields = _flat_fields()
    with pytest.raises(ValueError, match=r"unknown advantage estimator 'grpo'; valid: episode_grpo, gigpo, himac"):
        compute_advantage("grpo", fields, _mask(13))
    with pytest.raises(ValueError, match=r"response_mask has 12 rows for 13 samples"):
        compute_advantage("gigpo", fields, _mask(12))
    mask = _mask(13).float()
    mask[4, 1] = float("nan")
    with pytest.raises(ValueError, match=r"response_mask\[4, 1\] is nan, expected 0 or 1 \(sample 4\)"):
        compute_advantage("gigpo", fields, mask)
    mask[4, 1] = 0.5
    with pytest.raises(ValueError, match=r"response_mask\[4, 1\] is 0.5, expected 0 or 1"):
        compute_advantage("gigpo", fields, mask)
    with pytest.raises(FieldError, match=r"sample 0: role 'flat' cannot go to estimator 'himac'"):
        compute_advantage("himac", fields, _mask(13))
    with pytest.raises(FieldError, match=r"sample 0: role 'planner' cannot go to estimator 'gigpo'"):
        compute_advantage("gigpo", HIMAC_SAMPLES[:-1], _mask(22))
    with pytest.raises(FieldError, match=r"sample 1: planner sample tagged pass 'micro'"):
        compute_advantage("himac", [HIMAC_SAMPLES[0], dict(HIMAC_SAMPLES[1], **{"pass": "micro"})], _mask(2))


def test_config_validation():
    assert AdvantageConfig.from_config(None) == AdvantageConfig(True, 0.95, 1.0, 1e-6, "turn", "turn")
    assert AdvantageConfig().stats == "turn" and AdvantageConfig().penalty == "turn"
    from omegaconf import OmegaConf

    assert AdvantageConfig.from_config(OmegaConf.create({"gamma": 0.9})).gamma == 0.9
    valid = "eps, gamma, norm_by_std, penalty, stats, step_weight"
    with pytest.raises(ValueError, match=rf"unknown key 'norm_by_sdt'; valid keys: {valid}"):
        AdvantageConfig.from_config({"norm_by_sdt": False})
    with pytest.raises(ValueError, match=r"gamma is 1.5, expected a finite number in \[0.0, 1.0\]"):
        AdvantageConfig(gamma=1.5)
    with pytest.raises(ValueError, match=r"norm_by_std is 'yes', expected a bool"):
        AdvantageConfig.from_config({"norm_by_std": "yes"})
    with pytest.raises(ValueError, match=r"eps is nan"):
        AdvantageConfig(eps=float("nan"))
    with pytest.raises(ValueError, match=r"stats is 'episodes', expected one of episode, turn"):
        AdvantageConfig.from_config({"stats": "episodes"})
    with pytest.raises(ValueError, match=r"penalty is None, expected one of episode, turn"):
        AdvantageConfig(penalty=None)
    with pytest.raises(ValueError, match=r"stats is 1, expected one of episode, turn"):
        AdvantageConfig(stats=1)
    assert AdvantageConfig.from_config(OmegaConf.create({"stats": "episode", "penalty": "episode"})) == AdvantageConfig(
        stats="episode", penalty="episode"
    )


# --------------------------------------------------------------------------------------- verl dispatch
def _data_proto(n):
    from verl import DataProto

    mask = _mask(n)
    rewards = torch.zeros(n, T)
    rewards[:, 0] = 1.0
    return DataProto.from_dict(
        tensors={"token_level_rewards": rewards, "response_mask": mask},
        non_tensors={"uid": np.array(["u0"] * n, dtype=object)},
    )


@pytest.mark.parametrize("name", ["himac", "episode_grpo", "gigpo"])
def test_verl_plain_dispatch_names_our_entry_point(name):
    import himac_verl.plugin  # noqa: F401  (verl's import ran it already; explicit for clarity)
    from verl.trainer.config import AlgoConfig
    from verl.trainer.ppo.ray_trainer import compute_advantage as verl_compute_advantage

    from himac_verl.advantage.registry import MissingHimacFieldsError

    with pytest.raises(MissingHimacFieldsError) as err:
        verl_compute_advantage(_data_proto(4), adv_estimator=name, config=AlgoConfig(adv_estimator=name))
    message = str(err.value)
    assert f"advantage estimator {name!r} needs the per-sample HiMAC fields" in message
    assert "python -m himac_verl.main" in message and "himac_verl.trainer" in message
    assert "himac_fields=" in message


def test_registered_function_computes_with_fields():
    from verl.trainer.ppo.core_algos import get_adv_estimator_fn

    fields = _flat_fields()
    mask = _mask(13)
    rewards = torch.zeros(13, T, dtype=torch.float32)
    config = {"gamma": 0.5}
    for name in ("episode_grpo", "gigpo"):
        fn = get_adv_estimator_fn(name)
        adv, ret = fn(token_level_rewards=rewards, response_mask=mask, index=None, config=None,
                      himac_fields=fields, himac_config=config)
        want, _ = compute_advantage(name, fields, mask, config)
        assert torch.equal(adv, want) and torch.equal(ret, want)
    fn = get_adv_estimator_fn("himac")
    mask = _mask(22)
    adv, _ = fn(token_level_rewards=torch.zeros(22, T), response_mask=mask, himac_fields=HIMAC_SAMPLES[:-1])
    assert torch.equal(adv, compute_advantage("himac", HIMAC_SAMPLES[:-1], mask)[0])
    assert adv.abs().sum() > 0


# ------------------------------------------------------------------ penalties and per-turn statistics
def _flat_episode(task, ep, n_turns, ret, invalid_turns=(), failed=False, anchors=None, step_rewards=None):
    """A flat episode of n_turns samples; each invalid turn carries -0.1 (inside step_reward and
    episode_return, as the loop records it)."""
    pens = [-0.1 if t in invalid_turns else 0.0 for t in range(1, n_turns + 1)]
    ep_pen = float(sum(pens))
    out = []
    for t in range(1, n_turns + 1):
        r = (step_rewards[t - 1] if step_rewards else 0.0) + pens[t - 1]
        anchor = anchors[t - 1] if anchors else f"{ep}/s{t}"
        out.append(sample("flat", task, "", ep, "micro", t, ret + ep_pen, r=r, anchor=anchor, pen=pens[t - 1],
                          ep_pen=ep_pen, failed=failed))
    return out


def _scalars(name, samples, **config):
    """[B] float64 per-sample advantages (the token output is their float32 broadcast)."""
    fields, config = SampleFields.from_extra_fields(samples), AdvantageConfig.from_config(config)
    adv, _ = compute_advantage(name, fields, torch.ones(len(samples), 1), config)
    if name == "himac":
        scalar = macro_advantage(fields, config) + micro_advantage(fields, config)
    else:
        scalar = (gigpo_scalar if name == "gigpo" else episode_grpo_scalar)(fields, config)
    assert torch.equal(adv[:, 0], scalar.float())
    return scalar


def test_one_penalty_in_an_all_fail_group_blames_the_whole_episode_only_in_the_old_mode():
    # 8 failed ALFWorld-like episodes of 50 turns (env return 0); e0 has one invalid turn (turn 10).
    samples = [s for e in range(8) for s in _flat_episode("t", f"e{e}", 50, 0.0, (10,) if e == 0 else ())]
    invalid = 9  # row of e0's turn 10
    # The measured defect (stats="episode", penalty="episode"): returns (-0.1, 0 x 7), mean -0.0125, unbiased
    # std sqrt((0.0875^2 + 7 * 0.0125^2) / 7) = sqrt(0.00125) = 0.0353553: all 50 turns of e0 get
    # -0.0875 / 0.0353553 = -2.4749, every turn of the 7 others +0.0125 / 0.0353553 = +0.3536.
    old = _scalars("episode_grpo", samples, stats="episode", penalty="episode")
    assert old[:50].tolist() == pytest.approx([-2.47487] * 50, abs=1e-4)
    assert old[50:].tolist() == pytest.approx([0.353553] * 350, abs=1e-5)
    # penalty="turn", stats="episode": env returns all 0 -> norm part exactly 0; only the invalid turn
    # carries its own -0.1, unscaled. No other turn moves.
    for name in ("episode_grpo", "gigpo"):
        new = _scalars(name, samples, stats="episode", penalty="turn")
        assert new[invalid] == pytest.approx(-0.1, abs=1e-12)
        assert torch.count_nonzero(new) == 1
    # penalty="turn", stats="turn" (verl-agent): scores (-0.1 on the invalid turn, 0 on the 399 others),
    # mean -0.00025, std sqrt((0.09975^2 + 399 * 0.00025^2) / 399) = 0.005. The invalid turn gets
    # -0.09975 / 0.005001 = -19.946 (its group has no other variance); the 49 other turns of e0 are not
    # blamed: they get the same +0.00025 / 0.005001 = +0.04999 as every turn of the 7 other episodes.
    new = _scalars("episode_grpo", samples, stats="turn", penalty="turn")
    others = torch.cat([new[:invalid], new[invalid + 1:]])
    assert new[invalid].item() == pytest.approx(-0.09975 / (0.005 + EPS), rel=1e-6)
    assert torch.all(others == others[0]) and others[0].item() == pytest.approx(0.00025 / (0.005 + EPS), rel=1e-6)
    assert abs(float(new.sum())) < 1e-9
    mean_only = _scalars("episode_grpo", samples, stats="turn", penalty="turn", norm_by_std=False)
    assert mean_only[invalid].item() == pytest.approx(-0.09975)
    assert torch.allclose(torch.cat([mean_only[:invalid], mean_only[invalid + 1:]]),
                          torch.full((399,), 0.00025, dtype=torch.float64))


def test_advantage_mass_is_zero_sum_per_group_only_with_turn_stats():
    # 2 wins of 10 turns (return 10) vs 6 failures of 50 turns (return 0).
    samples = [s for e in range(2) for s in _flat_episode("t", f"w{e}", 10, 10.0)]
    samples += [s for e in range(6) for s in _flat_episode("t", f"f{e}", 50, 0.0)]
    wins, fails = slice(0, 20), slice(20, 320)
    # stats="episode": unique returns (10, 10, 0 x 6): mean 2.5, std sqrt((2 * 7.5^2 + 6 * 2.5^2) / 7) = 4.6291
    # -> win +1.6202 on each of 20 samples (mass +32.4), fail -0.5401 on each of 300 (mass -162.0)
    old = _scalars("episode_grpo", samples, stats="episode")
    assert float(old[wins].sum()) == pytest.approx(32.404, abs=1e-2)
    assert float(old[fails].sum()) == pytest.approx(-162.02, abs=1e-2)
    for name in ("episode_grpo", "gigpo"):
        for penalty in ("turn", "episode"):
            for norm_by_std in (True, False):
                new = _scalars(name, samples, stats="turn", penalty=penalty, norm_by_std=norm_by_std)
                assert abs(float(new.sum())) < 1e-4, (name, penalty, norm_by_std)
                assert float(new[wins].min()) > 0 > float(new[fails].max())


def test_turn_penalty_in_gigpo_step_returns():
    # penalty="turn": step returns are discounted ENV rewards, then the invalid turn's own penalty.
    # e1: env rewards (0, 0, 10), turn 2 invalid -> step_reward (0, -0.1, 10);
    #   R = (0.95^2 * 10, 0.95 * 10, 10) = (9.025, 9.5, 10), then turn 2: 9.5 - 0.1 = 9.4.
    # penalty="episode": the recorded step rewards: R = (0 + 0.95 * -0.1 + 0.9025 * 10, -0.1 + 9.5, 10)
    #   = (8.93, 9.4, 10).
    # Step groups (t, a1), (t, a2), (t, a3) hold e1's turn and e2's (env rewards 0, 0, 0, no penalty).
    e1 = _flat_episode("t", "e1", 3, 10.0, (2,), anchors=["a1", "a2", "a3"], step_rewards=[0.0, 0.0, 10.0])
    e2 = _flat_episode("t", "e2", 3, 0.0, anchors=["a1", "a2", "a3"])
    samples = e1 + e2
    for penalty, r1 in (("turn", [9.025, 9.4, 10.0]), ("episode", [8.93, 9.4, 10.0])):
        step = _scalars("gigpo", samples, penalty=penalty, norm_by_std=False) - _scalars(
            "episode_grpo", samples, penalty=penalty, norm_by_std=False)
        # each anchor group is (R_e1, 0): mean R_e1 / 2 -> +/- R_e1 / 2
        assert step.tolist() == pytest.approx([r / 2 for r in r1] + [-r / 2 for r in r1], abs=1e-9)


def test_lone_episode_follows_its_stats_mode():
    # A task that only ever had one episode (no failure): stats="episode" -> norm part 0 (+ its turn
    # penalties with penalty="turn"); stats="turn" -> its turns normalised against each other.
    samples = _flat_episode("t", "e", 3, 4.0, (2,))  # scores with penalty="turn": (4, 3.9, 4)
    assert _scalars("episode_grpo", samples, stats="episode").tolist() == pytest.approx([0.0, -0.1, 0.0])
    assert _scalars("episode_grpo", samples, stats="episode", penalty="episode").tolist() == [0.0, 0.0, 0.0]
    # (4, 3.9, 4): mean 3.9667, std sqrt((2 * 0.0333^2 + 0.0667^2) / 2) = 0.057735 -> (0.57734, -1.15468, 0.57734)
    got = _scalars("episode_grpo", samples, stats="turn")
    assert got.tolist() == pytest.approx([0.57734, -1.15468, 0.57734], abs=1e-4)


# ------------------------------------------------------------------------------------ failed episodes
def test_a_crashed_episode_gets_zero_and_leaves_the_statistics():
    # Sokoban-like group of 4: the crashed episode ended after 1 turn with -0.1, the others ran 5 turns.
    crashed = _flat_episode("t", "crash", 1, -0.1, failed=True)
    others = [s for e, ret in enumerate((-1.5, -1.5, -1.5)) for s in _flat_episode("t", f"e{e}", 5, ret)]
    samples = crashed + others
    # Before (the crash counted as an episode): returns (-0.1, -1.5 x 3), mean -1.15, std 0.7 -> the crash got
    # the best advantage, +1.05 / 0.7 = +1.5 (+0.866 in a real run with other returns).
    before = [dict(s, failed=False) for s in samples]
    assert _scalars("episode_grpo", before, stats="episode")[0].item() == pytest.approx(1.5, abs=1e-5)
    for stats in ("episode", "turn"):
        for name in ("episode_grpo", "gigpo"):
            # now: the crash gets 0 and the three healthy (all-equal) episodes are exactly 0
            assert torch.equal(_scalars(name, samples, stats=stats), torch.zeros(len(samples), dtype=torch.float64))
    # with distinct healthy returns, they are normalised among themselves, as if the crash never ran
    others = [s for e, ret in enumerate((-1.5, -1.2, -1.8)) for s in _flat_episode("t", f"e{e}", 5, ret)]
    for stats in ("episode", "turn"):
        for name in ("episode_grpo", "gigpo"):
            got = _scalars(name, crashed + others, stats=stats)
            assert got[0] == 0.0
            torch.testing.assert_close(got[1:], _scalars(name, others, stats=stats))
            assert got[1:].abs().max() > 0.5


@pytest.mark.parametrize("stats", ["episode", "turn"])
def test_a_group_left_with_one_healthy_episode_gets_zero(stats):
    # The healthy episode alone would get its raw score under stats="turn" (a group of one sample): the
    # failure rule wins, the whole group is 0. The other task (no failure) is unaffected.
    samples = _flat_episode("t", "ok", 1, 5.0) + _flat_episode("t", "bad", 2, 1.0, failed=True)
    samples += _flat_episode("u", "a", 2, 1.0) + _flat_episode("u", "b", 2, 3.0)
    for name in ("episode_grpo", "gigpo"):
        got = _scalars(name, samples, stats=stats)
        assert torch.equal(got[:3], torch.zeros(3, dtype=torch.float64))
        assert got[3:].abs().min() > 0.1
    # a task that lost ALL its episodes: zeros too
    samples = _flat_episode("t", "x", 2, 5.0, failed=True) + _flat_episode("t", "y", 2, 1.0, failed=True)
    assert torch.equal(_scalars("gigpo", samples, stats=stats), torch.zeros(4, dtype=torch.float64))


def test_failed_samples_join_no_gigpo_step_group():
    # e0 (failed) visits the same anchors as e1 and e2; the step groups must hold e1 and e2 only.
    kw = dict(anchors=["a", "b"], step_rewards=[0.0, 0.0])
    e0 = _flat_episode("t", "e0", 2, 9.0, failed=True, **dict(kw, step_rewards=[9.0, 0.0]))
    e1 = _flat_episode("t", "e1", 2, 1.0, **dict(kw, step_rewards=[0.0, 1.0]))
    e2 = _flat_episode("t", "e2", 2, 3.0, **dict(kw, step_rewards=[3.0, 0.0]))
    for stats in ("episode", "turn"):
        got = _scalars("gigpo", e0 + e1 + e2, stats=stats, gamma=0.5)
        torch.testing.assert_close(got[2:], _scalars("gigpo", e1 + e2, stats=stats, gamma=0.5))
        assert torch.equal(got[:2], torch.zeros(2, dtype=torch.float64))


@pytest.mark.parametrize("stats", ["episode", "turn"])
def test_a_failed_planner_gets_zero(stats):
    def planner(bp, ret, failed=False):
        return sample("planner", "tA", bp, f"ep-{bp}", "macro", 0, ret, failed=failed)

    # three blueprints, the one scored by a crashed episode is out; the two others are normalised alone
    got = _scalars("himac", [planner("b1", 9.0, failed=True), planner("b2", 1.0), planner("b3", 3.0)], stats=stats)
    assert got.tolist() == pytest.approx([0.0, -1 / R2, 1 / R2], abs=1e-5)
    # two blueprints, one failed: the group is left with one healthy planner -> all 0
    got = _scalars("himac", [planner("b1", 9.0, failed=True), planner("b2", 1.0)], stats=stats)
    assert torch.equal(got, torch.zeros(2, dtype=torch.float64))
    # a failed micro episode: out of its (task, blueprint) group
    micro = [X("tA", "b2", f"m{k}", "micro", 1, ret) for k, ret in enumerate((0.0, 2.0, 4.0))]
    micro[0]["failed"] = True
    got = _scalars("himac", [planner("b2", 1.0), planner("b3", 3.0)] + micro, stats=stats)
    assert got[2:].tolist() == pytest.approx([0.0, -1 / R2, 1 / R2], abs=1e-5)
