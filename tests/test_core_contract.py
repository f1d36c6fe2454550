"""The typed core: the contract keys round-trip through TurnSample, the agent loops' outputs carry exactly
them, the estimators read them, and every module uses the core's one statement of roles, passes, phases."""

from __future__ import annotations

import dataclasses

import pytest

from himac_verl.core import CONTRACT_FIELDS, PASSES, PHASE_CODES, ROLES, LoopPhase, Pass, Phase, Role, TurnSample


def _sample(**changes) -> TurnSample:
    base = dict(role="executor", task_uid="sokoban/train/7", blueprint_uid="c1/bp0", episode_uid="c1/micro0",
                pass_="micro", turn=3, subgoal_index=1, step_reward=-0.2, episode_return=9.7, won=True,
                anchor="#####\n#@$.#", penalty=-0.1, episode_penalty=-0.1, failed=False)
    return TurnSample(**{**base, **changes})


def test_contract_keys_round_trip():
    sample = _sample()
    extra = sample.to_extra_fields()
    assert tuple(extra) == CONTRACT_FIELDS
    assert extra["pass"] == "micro" and "pass_" not in extra
    assert TurnSample.from_extra_fields(extra) == sample
    assert TurnSample.from_extra_fields({**extra, "flags": {}, "env_steps": 4}) == sample  # extra keys ignored
    assert CONTRACT_FIELDS == ("role", "task_uid", "blueprint_uid", "episode_uid", "pass", "turn", "subgoal_index",
                               "step_reward", "episode_return", "won", "anchor", "penalty", "episode_penalty",
                               "failed")
    with pytest.raises(KeyError, match="no contract field 'episode_penalty'"):
        TurnSample.from_extra_fields({k: v for k, v in extra.items() if k != "episode_penalty"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        sample.turn = 4


def test_agent_loop_outputs_carry_the_contract_and_the_estimators_read_it():
    from himac_verl.advantage.fields import SampleFields
    from himac_verl.agent.samples import Episode, TurnRecord, episode_outputs

    episode = Episode(task_uid="t", episode_uid="e", blueprint_uid="b", pass_="micro", episode_return=10.4,
                      won=True, env_steps=2)
    for turn, (reward, penalty) in enumerate([(-0.2, -0.1), (10.6, 0.0)], start=1):
        episode.records.append(TurnRecord(role="executor", turn=turn, subgoal_index=0, anchor=f"s{turn}",
                                          prompt_ids=[1, 2], response_ids=[3], response_logprobs=[-0.5],
                                          text="<action>up</action>", min_global_steps=0, max_global_steps=0,
                                          step_reward=reward, penalty=penalty))
    samples = [TurnSample.from_extra_fields(out.extra_fields) for out in episode_outputs(episode)]
    assert [s.turn for s in samples] == [1, 2] and [s.step_reward for s in samples] == [-0.2, 10.6]
    assert all(s.episode_penalty == -0.1 and s.pass_ == "micro" and s.won and not s.failed for s in samples)
    fields = SampleFields.from_extra_fields([s.to_extra_fields() for s in samples])
    assert fields.turn.tolist() == [1, 2] and fields.is_micro.tolist() == [True, True]


def test_one_statement_of_roles_passes_and_phases():
    from himac_verl.advantage import fields
    from himac_verl.agent import config as agent_config
    from himac_verl.eval import curves, episode_log
    from himac_verl.trainer import coevolution, progress

    assert ROLES == ("planner", "executor", "flat") == tuple(r.value for r in Role)
    assert PASSES == ("macro", "micro") == tuple(p.value for p in Pass)
    assert PHASE_CODES == {"macro": 0, "micro": 1, "joint": 2, "flat": 3} == {p.value: i for i, p in enumerate(Phase)}
    assert fields.ROLES is ROLES and fields.PASSES is PASSES and coevolution.ROLES is ROLES
    assert episode_log.ROLES is ROLES and curves.PHASE_CODES is PHASE_CODES
    assert [fields.ROLES[c] for c in (fields.PLANNER, fields.EXECUTOR, fields.FLAT)] == ["planner", "executor", "flat"]
    assert progress.PHASE_NAMES == {0: "macro", 1: "micro", 2: "joint", 3: "flat"}
    assert agent_config.PHASES == tuple(p.value for p in LoopPhase) == ("macro", "micro", "joint", "flat", "eval")
    assert coevolution.PHASES == ("macro", "micro")
