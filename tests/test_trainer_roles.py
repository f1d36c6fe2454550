"""Phase filtering, optimizer-step sizing and role metrics of the HiMAC trainer, by hand."""

import numpy as np
import pytest

from himac_verl.trainer.roles import advantage_metrics, mini_batch_rows, phase_keep_mask, role_metrics


def sample(role, pass_, episode, won=False, ret=0.0, **flags):
    return {"role": role, "pass": pass_, "episode_uid": episode, "won": won, "episode_return": ret,
            "num_subgoals": flags.pop("num_subgoals", 0),
            "flags": {"parse_failure": False, "sub_done": False, "budget_forced": False,
                      "invalid_action": False, **flags}}


# Task with 2 blueprints (macro pass: planner + greedy scoring executor turns) and 2 micro episodes.
BATCH = [
    sample("planner", "macro", "m0", won=True, ret=10.0, num_subgoals=3),           # 0
    sample("executor", "macro", "m0", won=True, ret=10.0, sub_done=True),           # 1
    sample("planner", "macro", "m1", ret=-1.0, parse_failure=True),                 # 2
    sample("executor", "micro", "u0", won=True, ret=10.0, sub_done=True),           # 3
    sample("executor", "micro", "u0", won=True, ret=10.0, invalid_action=True),     # 4
    sample("executor", "micro", "u1", ret=-0.3, budget_forced=True),                # 5
]
LENGTHS = [20, 5, 30, 4, 6, 8]


@pytest.mark.parametrize("phase, kept", [("macro", [0, 2]), ("micro", [3, 4, 5]), ("joint", [0, 2, 3, 4, 5])])
def test_phase_keep_mask(phase, kept):
    assert np.flatnonzero(phase_keep_mask(BATCH, phase)).tolist() == kept


def test_phase_keep_mask_names_the_sample_without_fields():
    with pytest.raises(ValueError, match="sample 1: extra_fields has no 'pass'"):
        phase_keep_mask([BATCH[0], {"role": "planner"}], "macro")


def test_mini_batch_rows():
    assert mini_batch_rows(12, num_updates=3, dp_size=2) == 4
    with pytest.raises(ValueError, match="multiple of dp_size"):
        mini_batch_rows(10, num_updates=3, dp_size=2)
    with pytest.raises(ValueError, match="optimizer steps per update=0"):
        mini_batch_rows(10, num_updates=0, dp_size=1)


def test_role_metrics_by_hand():
    m = role_metrics(BATCH, LENGTHS)
    # unique episodes: macro m0 (won, 10), m1 (lost, -1); micro u0 (won, 10), u1 (lost, -0.3)
    assert m["himac/success/macro"] == 0.5 and m["himac/return/macro"] == pytest.approx(4.5)
    assert m["himac/success/micro"] == 0.5 and m["himac/return/micro"] == pytest.approx(4.85)
    # tokens per episode: planner episodes m0=20, m1=30 -> 25; executor m0=5, u0=10, u1=8 -> 23/3
    assert m["himac/tokens_per_episode/planner"] == 25.0
    assert m["himac/tokens_per_episode/executor"] == pytest.approx(23 / 3)
    assert m["himac/planner/parse_failure_rate"] == 0.5
    assert m["himac/planner/subgoals_per_blueprint"] == 3.0  # only the parsed blueprint counts
    # 4 executor turns: sub_done on 2, budget_forced on 1, invalid on 1
    assert m["himac/executor/sub_done_rate"] == 0.5
    assert m["himac/executor/budget_forced_rate"] == 0.25
    assert m["himac/invalid_action_rate"] == 0.25


def test_advantage_metrics_by_hand():
    # joint phase: rows 0, 2 (planners) and 3, 4, 5 (micro executors) train; row 1 never does
    kept = [BATCH[i] for i in (0, 2, 3, 4, 5)]
    adv = [1.0, -1.0, 0.5, 0.5, -0.5]
    m = advantage_metrics(kept, adv, real=[True, True, True, True, False])  # row 5 a padding copy
    assert m["himac/adv/macro/mean"] == 0.0 and m["himac/adv/macro/max"] == 1.0
    assert m["himac/adv/macro/std"] == 1.0
    assert m["himac/adv/micro/mean"] == 0.5 and m["himac/adv/micro/min"] == 0.5  # padding row excluded
    assert m["himac/samples/trained"] == 4.0 and "himac/adv/flat/mean" not in m


def test_role_metrics_flat_and_empty():
    flat = [sample("flat", "micro", "f0", won=True, ret=10.0), sample("flat", "micro", "f1", ret=0.0)]
    m = role_metrics(flat, [3, 4])
    assert m["himac/success/flat"] == 0.5 and m["himac/tokens_per_episode/flat"] == 3.5
    assert role_metrics([], []) == {}
    with pytest.raises(ValueError, match="2 extra_fields but 1"):
        role_metrics(flat, [3])
