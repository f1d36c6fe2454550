"""ALFWorld: stored walkthroughs replay to a win (one game per task type, valid_seen and valid_unseen),
invalid commands cost -0.1 and change nothing, splits/task types/ids, the race-safe unpack."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from himac_verl.envs import TaskSpec, make_env
from himac_verl.envs.alfworld import SPLIT_SIZES, SPLITS, TASK_TYPES, game_file, list_task_ids, task_type, walkthrough
from himac_verl.envs.alfworld import data as alfworld_data
from himac_verl.envs.base import INVALID_ACTION_PENALTY


def first_of_each_type(split: str) -> list[str]:
    ids = list_task_ids(split)
    return [next(t for t in ids if t.startswith(prefix + "-")) for prefix in TASK_TYPES]


REPLAYS = [(split, tid) for split in ("valid_seen", "valid_unseen") for tid in first_of_each_type(split)]


@pytest.fixture(scope="module")
def env():
    env = make_env("alfworld")  # one instance for every game: each reset loads the next game into it
    yield env
    env.close()


@pytest.mark.parametrize("split, task_id", REPLAYS, ids=[f"{s}-{task_type(t)}" for s, t in REPLAYS])
def test_walkthrough_replay_wins(env, split, task_id):
    first = env.reset(TaskSpec("alfworld", split, task_id))
    assert first.task_type == task_type(task_id)
    assert first.instruction and first.instruction in first.observation.text
    assert "Welcome to TextWorld" not in first.observation.text
    assert "help" not in first.observation.admissible_actions
    # the feedback only: the list is in admissible_actions (the prompt shows it once), the anchor keeps it
    text = first.observation.text
    assert "Admissible actions" not in text and text.strip() == text
    assert any(c.startswith("go to ") for c in first.observation.admissible_actions)
    assert first.observation.anchor == (first.observation.text + "\n"
                                        + "\n".join(sorted(first.observation.admissible_actions)))
    commands = walkthrough(split, task_id)
    rewards = []
    for i, command in enumerate(commands):
        step = env.step(command)
        rewards.append(step.reward)
        assert step.is_action_valid and step.action == command and step.info["projection"] == "exact"
        assert step.done == step.won == (i == len(commands) - 1)
    assert rewards == [0.0] * (len(commands) - 1) + [10.0]


def test_invalid_commands_cost_and_change_nothing(env):
    split, task_id = REPLAYS[0]
    first = env.reset(TaskSpec("alfworld", split, task_id))
    for bad in ["fly to the moon", "", "   ", None, "go to desk 1" * 40, "\ud800\u0000 ☃", "<action></action>",
                "go to drawer 99"]:
        step = env.step(bad)
        assert (step.reward, step.is_action_valid, step.action, step.done) == (INVALID_ACTION_PENALTY, False, None, False)
        assert step.observation.anchor == first.observation.anchor
        assert step.observation.admissible_actions == first.observation.admissible_actions
        assert step.observation.text == "Nothing happens."
    # The game was untouched: the walkthrough still wins, now from step 9 on.
    commands = walkthrough(split, task_id)
    for command in commands[:-1]:
        assert not env.step(command).done
    last = env.step(f"<action>  {commands[-1].upper()}. </action>")  # raw output, other case: exact match
    assert last.won and last.reward == 10.0 and last.info["steps"] == 8 + len(commands)


def test_max_steps_ends_the_episode_without_a_win():
    env = make_env("alfworld", max_steps=3)
    try:
        env.reset(TaskSpec("alfworld", *REPLAYS[0]))
        steps = [env.step(a) for a in ("look", "dance", "inventory")]
        assert [s.done for s in steps] == [False, False, True] and not steps[-1].won
        assert [s.reward for s in steps] == [0.0, INVALID_ACTION_PENALTY, 0.0]
        with pytest.raises(RuntimeError, match="after the episode ended"):
            env.step("look")
    finally:
        env.close()


def test_splits_ids_and_task_types():
    for split in SPLITS:
        ids = list_task_ids(split)
        assert len(ids) == SPLIT_SIZES[split] and ids == sorted(ids) and len(set(ids)) == len(ids)
        assert {task_type(t) for t in ids} == set(TASK_TYPES.values())
    assert not set(list_task_ids("valid_seen")) & set(list_task_ids("valid_unseen"))
    assert task_type("pick_two_obj_and_place-Candle-None-Toilet-429/trial_T1") == "Pick2"
    assert task_type("look_at_obj_in_light-Bowl-None-DeskLamp-301") == "Look"
    assert walkthrough("valid_seen", list_task_ids("valid_seen")[0])


@pytest.mark.parametrize(
    "spec, match",
    [
        (TaskSpec("alfworld", "test", "x"), "split must be one of"),
        (TaskSpec("alfworld", "valid_seen", "no-such-game/trial_1"), "not a game of split 'valid_seen'"),
        (TaskSpec("alfworld", "valid_seen", "../train/x"), "not a game of split"),
        (TaskSpec("sokoban", "valid_seen", "x"), "task.env must be 'alfworld'"),
    ],
)
def test_bad_tasks_are_named(spec, match):
    with pytest.raises(ValueError, match=match):
        make_env("alfworld").reset(spec)


def test_bad_options_and_misuse():
    with pytest.raises(ValueError, match="max_steps"):
        make_env("alfworld", max_steps=0)
    with pytest.raises(RuntimeError, match="before reset"):
        make_env("alfworld").step("look")
    with pytest.raises(ValueError, match="unknown task type"):
        task_type("make_coffee-Cup-None-Machine-1/trial_1")


def small_archive(root: Path) -> Path:
    """A copy of the shared archive's layout with three games (fast to unpack)."""
    games = [("train", list_task_ids("train")[0]), ("valid_unseen", list_task_ids("valid_unseen")[0]),
             ("valid_unseen", list_task_ids("valid_unseen")[1])]
    archive = root / "data" / "alfworld" / "json_2.1.1.tar.xz"
    archive.parent.mkdir(parents=True)
    with tarfile.open(archive, "w:xz") as tar:
        for split, tid in games:
            tar.add(game_file(split, tid), arcname=f"json_2.1.1/{split}/{tid}/game.tw-pddl")
    return root / "data"


def test_two_processes_unpacking_at_once_agree(tmp_path: Path):
    data = small_archive(tmp_path)
    code = ("from himac_verl.envs.alfworld import games_dir, list_task_ids;"
            "print(games_dir(), len(list_task_ids('train')), len(list_task_ids('valid_unseen')))")
    environ = dict(os.environ, HIMAC_CACHE_DIR=str(tmp_path / "cache"), HIMAC_DATA_DIR=str(data))
    procs = [subprocess.Popen([sys.executable, "-c", code], env=environ, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs[0] == outs[1] == [str(tmp_path / "cache" / "alfworld" / "json_2.1.1"), "1", "2"]
    assert sorted(p.name for p in (tmp_path / "cache" / "alfworld").iterdir()) == ["json_2.1.1"]  # no temp left


def test_losing_the_unpack_race_keeps_the_winner_and_cleans_up(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HIMAC_DATA_DIR", str(small_archive(tmp_path)))
    monkeypatch.setenv("HIMAC_CACHE_DIR", str(tmp_path / "cache"))
    final = tmp_path / "cache" / "alfworld" / "json_2.1.1"
    real_rename = os.rename

    def another_process_wins(src, dst):
        shutil.copytree(src, dst)  # the other process renamed its copy into place first
        (Path(dst) / "winner").touch()
        real_rename(src, dst)  # now fails: the target exists and is not empty

    monkeypatch.setattr(alfworld_data.os, "rename", another_process_wins)
    assert alfworld_data.games_dir() == final and (final / "winner").exists()
    assert sorted(p.name for p in final.parent.iterdir()) == ["json_2.1.1"]
    assert len(alfworld_data.list_task_ids("valid_unseen")) == 2


def test_a_missing_archive_is_named(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HIMAC_DATA_DIR", str(tmp_path / "nowhere"))
    monkeypatch.setenv("HIMAC_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match="nowhere/alfworld/json_2.1.1.tar.xz"):
        alfworld_data.games_dir()


def test_pooled_sessions_replay_walkthroughs_concurrently():
    from himac_verl.envs.pool import EnvPool

    games = [("valid_seen", first_of_each_type("valid_seen")[1]), ("valid_unseen", first_of_each_type("valid_unseen")[0])]

    async def replay(pool, split, task_id):
        async with pool.session() as session:
            await session.reset(TaskSpec("alfworld", split, task_id))
            for command in walkthrough(split, task_id):
                step = await session.step(command)
            return step.won, step.reward

    async def main():
        pool = EnvPool("alfworld", num_workers=1)
        try:
            return await asyncio.gather(*[replay(pool, s, t) for s, t in games])
        finally:
            await pool.aclose()

    assert asyncio.run(main()) == [(True, 10.0), (True, 10.0)]
