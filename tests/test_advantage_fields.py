"""SampleFields: conversion of the contract dicts, and every validation error (naming sample, field, value)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from himac_verl.advantage import CONTRACT_FIELDS, FieldError, SampleFields, compute_advantage


def sample(role="flat", task="t0", bp="", ep="e0", pass_="micro", turn=1, ret=1.0, r=0.0, anchor="s", won=False,
           pen=0.0, ep_pen=0.0, failed=False):
    return {
        "role": role, "task_uid": task, "blueprint_uid": bp, "episode_uid": ep, "pass": pass_, "turn": turn,
        "subgoal_index": -1, "step_reward": r, "episode_return": ret, "won": won, "anchor": anchor,
        "penalty": pen, "episode_penalty": ep_pen, "failed": failed,
    }


def flat_batch(n_episodes=3, turns=2):
    return [sample(ep=f"e{e}", turn=t + 1, ret=float(e), anchor=f"s{t}") for e in range(n_episodes) for t in range(turns)]


def test_factorisation_and_dtypes():
    samples = [
        sample("planner", "tA", "b1", "p1", "macro", 0, 1.0, anchor=""),
        sample("executor", "tA", "b1", "x1", "micro", 1, 2.0, r=-0.1, won=True, pen=-0.1, ep_pen=-0.1),
        sample("executor", "tA", "b2", "x2", "micro", 1, 3.0),
        sample("planner", "tB", "b1", "p2", "macro", 0, 4.0, anchor="", failed=True),
        sample("executor", "tA", "b1", "x1", "micro", 2, 2.0, r=2.1, won=True, ep_pen=-0.1),
    ]
    f = SampleFields.from_extra_fields(samples)
    assert len(f) == 5 and f.num_tasks == 2 and f.num_episodes == 4
    assert f.task.tolist() == [0, 0, 0, 1, 0] and f.task_uids == ("tA", "tB")
    assert f.episode.tolist() == [0, 1, 2, 3, 1] and f.episode_uids == ("p1", "x1", "x2", "p2")
    assert f.role.tolist() == [0, 1, 1, 0, 1] and f.is_micro.tolist() == [False, True, True, False, True]
    # micro groups are (task, blueprint) pairs: (tA,b1) (tA,b2) (tB,b1) -> 3 groups
    assert f.micro_group.tolist() == [0, 0, 1, 2, 0] and f.num_micro_groups == 3
    assert f.blueprint.tolist() == [0, 0, 1, 0, 0]
    assert f.step_reward.dtype == torch.float64 and f.step_reward.tolist() == [0.0, -0.1, 0.0, 0.0, 2.1]
    assert f.won.tolist() == [False, True, False, False, True] and not f.is_padding.any()
    # (task, anchor) pairs: (tA,"") (tA,"s") (tB,"") -> anchor groups 0, 1, 1, 2, 1
    assert f.anchor_group.tolist() == [0, 1, 1, 2, 1] and f.num_anchor_groups == 3
    assert f.penalty.dtype == torch.float64 and f.penalty.tolist() == [0.0, -0.1, 0.0, 0.0, 0.0]
    assert f.episode_penalty.dtype == torch.float64 and f.episode_penalty.tolist() == [0.0, -0.1, 0.0, 0.0, -0.1]
    assert f.failed.dtype == torch.bool and f.failed.tolist() == [False, False, False, True, False]


def test_numpy_scalars_and_missing_blueprint_for_non_executors():
    s = sample(turn=np.int64(2), ret=np.float32(1.5), r=np.float64(-0.1), won=np.bool_(True), bp=None,
               pen=np.float64(-0.1), ep_pen=np.float32(-0.5), failed=np.bool_(False))
    f = SampleFields.from_extra_fields([s])
    assert f.turn.tolist() == [2] and f.episode_return.tolist() == [1.5] and f.blueprint.tolist() == [-1]
    assert f.penalty.tolist() == [-0.1] and f.episode_penalty.tolist() == [-0.5] and f.failed.tolist() == [False]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"role": "critic"}, r"sample 1: role is 'critic', expected one of planner, executor, flat"),
        ({"pass": "greedy"}, r"sample 1: pass is 'greedy', expected one of macro, micro"),
        ({"pass": None}, r"sample 1: pass is None, expected one of macro, micro"),
        ({"step_reward": float("nan")}, r"sample 1: step_reward is nan, expected a finite number"),
        ({"step_reward": float("-inf")}, r"sample 1: step_reward is -inf, expected a finite number"),
        ({"episode_return": float("inf")}, r"sample 1: episode_return is inf, expected a finite number"),
        ({"step_reward": "0.5"}, r"sample 1: step_reward is '0.5', expected a finite number"),
        ({"episode_return": True}, r"sample 1: episode_return is True, expected a finite number"),
        ({"turn": -1}, r"sample 1: turn is -1, expected an int >= 0"),
        ({"turn": 1.0}, r"sample 1: turn is 1.0, expected an int >= 0"),
        ({"subgoal_index": -2}, r"sample 1: subgoal_index is -2, expected an int >= -1"),
        ({"won": "yes"}, r"sample 1: won is 'yes', expected a bool"),
        ({"task_uid": ""}, r"sample 1: task_uid is '', expected a non-empty str"),
        ({"episode_uid": 7}, r"sample 1: episode_uid is 7, expected a non-empty str"),
        ({"anchor": None}, r"sample 1: flat sample without anchor \(got None\)"),
        ({"anchor": 3}, r"sample 1: anchor is 3, expected a str"),
        ({"blueprint_uid": 3}, r"sample 1: blueprint_uid is 3, expected a str \(or None\)"),
        ({"penalty": 0.1}, r"sample 1: penalty is 0.1, expected a finite number <= 0"),
        ({"penalty": float("nan")}, r"sample 1: penalty is nan, expected a finite number <= 0"),
        ({"penalty": float("-inf")}, r"sample 1: penalty is -inf, expected a finite number <= 0"),
        ({"penalty": None}, r"sample 1: penalty is None, expected a finite number <= 0"),
        ({"penalty": False}, r"sample 1: penalty is False, expected a finite number <= 0"),
        ({"episode_penalty": 1e-9}, r"sample 1: episode_penalty is 1e-09, expected a finite number <= 0"),
        ({"episode_penalty": float("nan")}, r"sample 1: episode_penalty is nan, expected a finite number <= 0"),
        ({"episode_penalty": "-0.1"}, r"sample 1: episode_penalty is '-0.1', expected a finite number <= 0"),
        ({"failed": "no"}, r"sample 1: failed is 'no', expected a bool"),
        ({"failed": None}, r"sample 1: failed is None, expected a bool"),
        ({"failed": 0.0}, r"sample 1: failed is 0.0, expected a bool"),
    ],
)
def test_bad_values_name_sample_field_value(change, message):
    samples = flat_batch()
    samples[1] = dict(samples[1], **change)
    with pytest.raises(FieldError, match=message):
        SampleFields.from_extra_fields(samples)


def test_nan_deep_in_batch_names_that_sample():
    samples = flat_batch(n_episodes=10)
    samples[17]["episode_return"] = float("nan")
    with pytest.raises(FieldError, match=r"^sample 17: episode_return is nan"):
        SampleFields.from_extra_fields(samples)


@pytest.mark.parametrize("field", CONTRACT_FIELDS)
def test_missing_field(field):
    samples = flat_batch()
    del samples[2][field]
    with pytest.raises(FieldError, match=rf"sample 2: missing field '{field}'"):
        SampleFields.from_extra_fields(samples)


def test_empty_batch_and_non_dict():
    with pytest.raises(FieldError, match=r"empty batch"):
        SampleFields.from_extra_fields([])
    with pytest.raises(FieldError, match=r"empty batch"):
        compute_advantage("himac", [], torch.zeros(0, 4))
    with pytest.raises(FieldError, match=r"sample 1: extra_fields is a list, expected a dict"):
        SampleFields.from_extra_fields([sample(), ["role", "flat"]])


def test_executor_without_blueprint():
    for bad in (None, ""):
        samples = [sample("executor", bp="b1", turn=1), sample("executor", bp=bad, ep="e1", turn=1)]
        with pytest.raises(FieldError, match=rf"sample 1: executor sample without blueprint_uid \(got {bad!r}\)"):
            SampleFields.from_extra_fields(samples)


@pytest.mark.parametrize(
    "field, value, shown",
    [
        ("episode_return", 9.0, "9.0"),
        ("task_uid", "t9", "'t9'"),
        ("pass", "macro", "'macro'"),
        ("blueprint_uid", "b9", "'b9'"),
        ("episode_penalty", -0.1, "-0.1"),
        ("failed", True, "True"),
    ],
)
def test_episode_must_agree(field, value, shown):
    samples = flat_batch()  # e0: rows 0, 1; e1: rows 2, 3
    samples[3][field] = value
    with pytest.raises(
        FieldError,
        match=rf"sample 3: episode 'e1' has {field} {shown} but sample 2 of the same episode has .*must agree on {field}",
    ):
        SampleFields.from_extra_fields(samples)


def test_planner_turn_and_its_scoring_executor_turns_share_an_episode():
    # The contract numbers the planner as turn 0 of the episode that executes its blueprint.
    samples = [sample("planner", bp="b1", ep="x", pass_="macro", turn=0, anchor=""),
               sample("executor", bp="b1", ep="x", pass_="macro", turn=1)]
    fields = SampleFields.from_extra_fields(samples)
    assert fields.num_episodes == 1


def test_flat_and_hierarchical_samples_never_share_an_episode():
    samples = [sample("planner", bp="b1", ep="x", pass_="macro", turn=0, anchor=""),
               sample("flat", bp="b1", ep="x", pass_="macro", turn=1)]
    with pytest.raises(FieldError, match=r"sample 1: episode 'x' has role 'flat' .*flat episodes hold flat samples"):
        SampleFields.from_extra_fields(samples)


def test_planner_sample_must_be_turn_zero():
    samples = [sample("planner", bp="b1", ep="x", pass_="macro", turn=2, anchor="")]
    with pytest.raises(FieldError, match=r"sample 0: planner sample has turn 2"):
        SampleFields.from_extra_fields(samples)


def test_penalty_fields_missing_on_one_sample_name_it():
    for field in ("penalty", "episode_penalty", "failed"):
        samples = flat_batch()
        del samples[4][field]
        with pytest.raises(FieldError, match=rf"^sample 4: missing field '{field}'"):
            SampleFields.from_extra_fields(samples)


def test_penalty_and_failed_disagreement_on_padding_rows_is_ignored():
    samples = flat_batch()
    samples.append(dict(samples[0], episode_penalty=-5.0, failed=True))  # a (stale) padding copy
    f = SampleFields.from_extra_fields(samples, is_padding=[False] * 6 + [True])
    assert f.failed.tolist() == [False] * 6 + [True]


def test_repeated_turn():
    samples = flat_batch()
    samples[3]["turn"] = 1  # e1 now has turn 1 twice (rows 2 and 3)
    with pytest.raises(FieldError, match=r"sample 3: episode 'e1' repeats turn 1 \(also sample 2\)"):
        SampleFields.from_extra_fields(samples)


def test_padding_rows_are_exempt_from_checks_but_must_match_length():
    samples = flat_batch()
    samples.append(dict(samples[0]))  # a verl padding copy repeats (episode, turn)
    with pytest.raises(FieldError, match=r"repeats turn"):
        SampleFields.from_extra_fields(samples)
    f = SampleFields.from_extra_fields(samples, is_padding=np.array([False] * 6 + [True]))
    assert f.is_padding.tolist() == [False] * 6 + [True]
    f = SampleFields.from_extra_fields(samples, is_padding=torch.tensor([0, 0, 0, 0, 0, 0, 1]))
    assert f.is_padding[-1]
    with pytest.raises(FieldError, match=r"is_padding has shape \(6,\), expected \(7,\)"):
        SampleFields.from_extra_fields(samples, is_padding=[False] * 6)
    with pytest.raises(FieldError, match=r"is_padding\[2\] is 'x', expected a bool"):
        SampleFields.from_extra_fields(samples, is_padding=[False, False, "x", False, False, False, True])


@pytest.mark.parametrize("name", ["episode_grpo", "gigpo"])
@pytest.mark.parametrize("eps", [0.0, 1e-6])
def test_all_equal_returns_and_groups_of_one_give_exact_zero(name, eps):
    # task t0: three episodes, all return 0.1 (its float mean is not exactly 0.1); same step rewards,
    # so each anchor group is all-equal too. Task t1: one episode (a group of one).
    samples = [sample(ep=f"e{e}", turn=t + 1, ret=0.1, r=0.1, anchor=f"s{t}") for e in range(3) for t in range(2)]
    samples += [sample(task="t1", ep="lone", turn=1, ret=5.0, r=5.0)]
    mask = torch.ones(len(samples), 4)
    adv, ret = compute_advantage(name, samples, mask, {"eps": eps, "stats": "episode"})
    assert torch.equal(adv, torch.zeros_like(adv)) and torch.equal(ret, torch.zeros_like(ret))
    # stats="turn" (verl-agent's rule): the all-equal group is still exactly 0; the group of ONE SAMPLE (t1)
    # gets its raw score / (1 + eps) at episode level (and 0 at GiGPO's step level)
    adv, _ = compute_advantage(name, samples, mask, {"eps": eps, "stats": "turn"})
    assert torch.equal(adv[:-1], torch.zeros_like(adv[:-1]))
    torch.testing.assert_close(adv[-1], torch.full((4,), 5.0 / (1 + eps)))


def test_himac_all_padding_batch_is_all_zero():
    samples = [sample("planner", bp="b", ep="p", pass_="macro", turn=0, anchor="")]
    f = SampleFields.from_extra_fields(samples, is_padding=[True])
    adv, _ = compute_advantage("himac", f, torch.ones(1, 3))
    assert torch.equal(adv, torch.zeros(1, 3))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"turn": 2**63}, r"sample 1: turn is 9223372036854775808, expected an int >= 0 \(and < 2\*\*63\)"),
        ({"subgoal_index": -(2**70)}, r"sample 1: subgoal_index is -1180591620717411303424, expected an int >= -1"),
        ({"step_reward": 1e40}, r"sample 1: step_reward is 1e\+40, expected a finite number \(of size at most 1e\+30\)"),
        ({"step_reward": 10**400}, r"sample 1: step_reward is 1000000000\d+, expected a finite number"),
        ({"episode_return": -1e200}, r"sample 1: episode_return is -1e\+200, expected a finite number"),
        ({"episode_return": 1.7e308}, r"sample 1: episode_return is 1.7e\+308, expected a finite number"),
        ({"penalty": -1e31}, r"sample 1: penalty is -1e\+31, expected a finite number <= 0 \(of size at most 1e\+30\)"),
    ],
)
def test_values_out_of_range_name_sample_field_value(change, message):
    """Past int64 or beyond what float64 group statistics and float32 advantages hold: a clear error, not a
    bare OverflowError nor silently zero / NaN advantages."""
    samples = flat_batch()
    samples[1] = dict(samples[1], **change)
    with pytest.raises(FieldError, match=message):
        SampleFields.from_extra_fields(samples)
