"""``python -m himac_verl.eval run``: evaluation episodes through verl's validation -> episode log -> tables.

The first tests check the sample -> record conversion by hand (no Ray). The end-to-end tests run the CLI
on 1-2 tasks per env with a tiny random model (success is 0; what is checked is that every task gives one
valid record, that the records say what the loop did, and that the tables are complete):

- Sokoban, HiMAC loop with the ``choice`` blueprint format (a random model always picks a blueprint), so
  the executor really acts: blueprint, actions, rewards and planner/executor tokens are in the log;
- WebShop, flat loop: no blueprint, flat tokens, the env's score;
- ALFWorld, HiMAC loop with the tagged format: a random model never writes a parsable plan, so each
  episode is a flagged parse failure with no env step (the log keeps the env's return 0 and the loop's
  training return under ``extra.loop_return``); both validation splits, per-type columns all present.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import wait_named_actors_gone

from himac_verl.agent.config import LoopSettings
from himac_verl.agent.samples import new_flags
from himac_verl.eval.episode_log import read_episodes
from himac_verl.eval.episodes import RunInfo, Sample, episode_record, episode_records, missing_task_record
from himac_verl.eval.tables import columns_for

pytestmark = pytest.mark.ray

RUN = RunInfo("himac", "tiny", 0)


def _sample(turn, role, *, ep="e1", step=None, reward=0.0, text="", ret=0.0, won=False, score=None, **flags):
    extra = {
        "role": role, "task_uid": "sokoban/test/7", "blueprint_uid": "b", "episode_uid": ep, "pass": "macro",
        "turn": turn, "subgoal_index": -1, "step_reward": reward, "episode_return": ret, "won": won,
        "anchor": "", "flags": new_flags(**flags), "num_subgoals": 2, "env_steps": 0, "task_type": "sokoban",
        "env_score": score, "parse_error": "", "env_step": step is not None, "env_action": step or None,
    }
    if step == "":
        extra["env_action"] = None  # stepped, but the env judged the output invalid
    return Sample(extra, list(range(len(text) or 1)), text)


def _settings(env):
    return LoopSettings.from_config({}, env)


def test_record_from_a_himac_episode_by_hand():
    samples = [
        _sample(3, "executor", step="", reward=-0.1, text="junk", ret=0.8, won=True, score=1.0,
                invalid_action=True, step_limit=False),
        _sample(0, "planner", text="<plan>\n1. go left\n2. push up\n</plan>", ret=0.8, won=True, score=1.0),
        _sample(1, "executor", step="left", reward=-0.1, text="<action>left</action>", ret=0.8, won=True,
                score=1.0),
        _sample(2, "executor", text="<sub_done>", ret=0.8, won=True, score=1.0, sub_done=True),
        _sample(4, "executor", step="up", reward=1.0, text="<action>up</action>", ret=0.8, won=True, score=1.0),
    ]
    rec = episode_record(samples, RUN, _settings)
    assert (rec.env, rec.split, rec.task_id, rec.task_uid) == ("sokoban", "test", "7", "sokoban/test/7")
    assert rec.blueprint == ["go left", "push up"]
    assert rec.actions == ["left", None, "up"]  # turn order; the <sub_done>-only turn made no step
    assert rec.rewards == [-0.1, -0.1, 1.0]
    assert rec.episode_return == pytest.approx(0.8) and rec.won and rec.score == 1.0
    assert rec.num_steps == 3 and rec.flags == []
    assert rec.tokens == {"planner": len("<plan>\n1. go left\n2. push up\n</plan>"),
                          "executor": len("junk") + len("<action>left</action>") + len("<sub_done>")
                          + len("<action>up</action>"), "flat": 0}
    assert rec.extra["model_actions"] == ["left", None, "up"]
    assert rec.extra["num_invalid_action"] == 1 and rec.extra["num_sub_done"] == 1
    assert "loop_return" not in rec.extra and rec.extra["ended_by"] == "env"


def test_parse_failure_keeps_env_return_and_flags_it():
    planner = _sample(0, "planner", text="no plan here", ret=-1.5, parse_failure=True)
    planner.extra["parse_error"] = "no_plan_block"
    rec = episode_record([planner], RUN, _settings)
    # the validator's rule episode_return == sum(rewards) holds: the env gave nothing, the loop's -1.5
    # (himac.agent.parse_failure_return) is a training signal kept under extra
    assert rec.episode_return == 0.0 and rec.rewards == [] and rec.num_steps == 0
    assert rec.blueprint == [] and rec.flags == ["parse_failure"]
    assert rec.extra["loop_return"] == -1.5 and rec.extra["parse_error"] == "no_plan_block"
    assert rec.score == 0.0  # Sokoban needs a score: no step, no box moved


def test_flat_episodes_grouped_and_missing_task_record():
    samples = [_sample(1, "flat", ep="a", step="up", reward=-0.1, ret=-0.1, score=0.0, step_limit=True),
               _sample(1, "flat", ep="b", step="down", reward=-0.1, ret=-0.1, score=0.0),
               # the env crashed on this turn's step: no step made, the episode is flagged
               _sample(2, "flat", ep="b", ret=-0.1, score=0.0, env_failure=True)]
    a, b = episode_records(samples, RunInfo("flat", "tiny", 3), _settings)
    assert a.blueprint is None and a.actions == ["up"] and a.flags == [] and a.extra["ended_by"] == "step_limit"
    assert b.actions == ["down"] and b.episode_return == pytest.approx(-0.1) and b.flags == ["env_failure"]
    assert b.extra["ended_by"] == "env_failure" and b.extra["turns"] == 2
    assert a.tokens["flat"] == 1 and a.seed == 3
    lost = missing_task_record("alfworld/valid_seen/pick_x/trial_1", "Pick", RUN)
    assert (lost.task_id, lost.won, lost.score, lost.flags) == ("pick_x/trial_1", False, None, ["no_episode"])
    with pytest.raises(ValueError, match="several episodes"):
        episode_record(samples, RUN, _settings)


# ------------------------------------------------------------------ end to end through verl
COMMON = ["data.max_prompt_length=1536", "data.max_response_length=16", "himac.agent.max_env_steps=2",
          "++himac.pool.num_workers=1"]


def _run(model, tmp_path, env, method, limit, extra=(), split=None):
    from himac_verl.eval.cli import main

    out = tmp_path / env
    argv = ["run", "--model", model, "--env", env, "--method", method, "--limit", str(limit), "--out", str(out)]
    argv += ["--split", split] if split else []
    for o in [*COMMON, *extra]:
        argv += ["--override", o]
    try:
        assert main(argv) == 0
    finally:
        wait_named_actors_gone()
    plan = json.loads((out / "run.json").read_text())["plan"]
    records = read_episodes(out / "episodes.jsonl")
    assert sorted(r.task_uid for r in records) == sorted(t["task_uid"] for t in plan["tasks"])
    assert all(r.method == method and r.model == model and r.env == env for r in records)
    assert all("no_episode" not in r.flags for r in records)  # every call reached TransferQueue
    for name in ("comparison.png", "report.md", f"table_{env}.csv", "results.csv", "episode_stats.csv"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    table = pd.read_csv(out / f"table_{env}.csv")
    assert [s.name for s in columns_for(env)] == [c for c in table.columns if c in {s.name for s in columns_for(env)}]
    ours = table[table["origin"] == "ours"]
    assert set(ours["split"]) == {r.split for r in records}
    assert ours[[s.name for s in columns_for(env)]].notna().all().all()
    long = pd.read_csv(out / "results.csv")
    long = long[long["origin"] == "ours"]
    for (split, column), group in long.groupby(["split", "column"]):
        spec = next(s for s in columns_for(env) if s.name == column)
        expected = sum(1 for r in records if r.split == split and spec.task_type in (None, r.task_type))
        assert int(group["n"].iloc[0]) == expected, (split, column)
    return records


def test_eval_run_sokoban_himac_executes(ray_session, tiny_model_dir, tmp_path):
    records = _run(tiny_model_dir, tmp_path, "sokoban", "himac", 2, extra=[
        "himac.agent.blueprint_format=choice", "himac.agent.blueprint_choices=[[push the box onto the target]]"])
    assert len(records) == 2
    for r in records:
        assert r.blueprint == ["push the box onto the target"]
        assert 1 <= r.num_steps <= 2 and len(r.actions) == len(r.rewards) == r.num_steps
        assert r.tokens["planner"] > 0 and r.tokens["executor"] > 0 and r.tokens["flat"] == 0
        assert r.score is not None and not r.won


def test_eval_run_webshop_flat(ray_session, tiny_model_dir, tmp_path):
    records = _run(tiny_model_dir, tmp_path, "webshop", "flat", 2)
    assert len(records) == 2
    for r in records:
        assert r.blueprint is None and r.task_type == "webshop"
        assert 1 <= r.num_steps <= 2 and r.tokens["flat"] > 0 and r.tokens["planner"] == 0
        assert r.score is not None and 0.0 <= r.score <= 1.0


def test_eval_run_alfworld_himac_parse_failures(ray_session, tiny_model_dir, tmp_path):
    records = _run(tiny_model_dir, tmp_path, "alfworld", "himac", 1)
    assert sorted(r.split for r in records) == ["valid_seen", "valid_unseen"]
    for r in records:
        assert r.flags == ["parse_failure"] and r.blueprint == [] and r.num_steps == 0
        assert r.episode_return == 0.0 and r.extra["loop_return"] == pytest.approx(-1.2)  # 2 steps x -0.1, minus the margin 1
        assert r.score is None and r.task_type in {"Pick", "Look", "Clean", "Heat", "Cool", "Pick2"}
