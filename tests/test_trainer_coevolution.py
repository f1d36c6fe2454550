"""The co-evolution schedule and the per-phase sample filter, checked against hand-written tables."""

import pytest

from himac_verl.trainer.coevolution import CoEvolutionSchedule, sample_trains


def test_alternates_every_k_steps_starting_with_phase_a():
    s = CoEvolutionSchedule(mode="coevolve", phase_length=3, start_phase="macro")
    assert [s.phase(t) for t in range(1, 11)] == ["macro"] * 3 + ["micro"] * 3 + ["macro"] * 3 + ["micro"]


def test_start_phase_b_and_length_one():
    s = CoEvolutionSchedule(mode="coevolve", phase_length=1, start_phase="micro")
    assert [s.phase(t) for t in range(1, 6)] == ["micro", "macro", "micro", "macro", "micro"]


@pytest.mark.parametrize("mode", ["joint", "flat", "macro", "micro"])
def test_fixed_modes(mode):
    s = CoEvolutionSchedule(mode=mode, phase_length=2)
    assert {s.phase(t) for t in range(1, 9)} == {mode}


def test_from_config_and_defaults():
    s = CoEvolutionSchedule.from_config({"phase_length": 2})
    assert (s.mode, s.phase_length, s.start_phase) == ("coevolve", 2, "macro")


@pytest.mark.parametrize(
    "kwargs, key",
    [({"mode": "alternate"}, "mode"), ({"phase_length": 0}, "phase_length"), ({"start_phase": "A"}, "start_phase")],
)
def test_bad_settings_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=f"himac.schedule.{key}"):
        CoEvolutionSchedule(**kwargs)


def test_step_zero_rejected():
    with pytest.raises(ValueError, match="step=0"):
        CoEvolutionSchedule().phase(0)


def test_resume_same_schedule_continues_and_mismatch_is_an_error():
    saved = CoEvolutionSchedule(phase_length=4).state_dict()
    CoEvolutionSchedule(phase_length=4).check_resume(saved)  # no error
    with pytest.raises(ValueError, match="phase_length=2.*trained with 4"):
        CoEvolutionSchedule(phase_length=2).check_resume(saved)


# (phase, role, pass) -> trains?  Written out in full: this table is the phase rule of trainer/coevolution.py's docstring.
TABLE = {
    ("macro", "planner", "macro"): True,
    ("macro", "executor", "macro"): False,
    ("macro", "executor", "micro"): False,
    ("micro", "planner", "macro"): False,
    ("micro", "executor", "macro"): False,  # greedy scoring episodes never train
    ("micro", "executor", "micro"): True,
    ("joint", "planner", "macro"): True,
    ("joint", "executor", "macro"): False,
    ("joint", "executor", "micro"): True,
    ("flat", "flat", "micro"): True,
    ("flat", "planner", "macro"): False,
}


@pytest.mark.parametrize("key", sorted(TABLE))
def test_sample_trains_table(key):
    assert sample_trains(*key) is TABLE[key]


@pytest.mark.parametrize("args, field", [(("macro", "critic", "macro"), "role"), (("macro", "planner", "x"), "pass"),
                                         (("eval", "planner", "macro"), "phase")])
def test_sample_trains_rejects_unknown_values(args, field):
    with pytest.raises(ValueError, match=field):
        sample_trains(*args)
