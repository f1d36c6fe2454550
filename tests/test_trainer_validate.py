"""validate_himac_config: every bad setting is rejected before Ray starts, with its key and value in the
message; good configs (HiMAC, flat baselines, the arithmetic task, explicit data files) pass."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from omegaconf import OmegaConf

from himac_verl.agent.rows import task_rows
from himac_verl.tasks.env_datasets import DatasetSpec, build_dataset
from himac_verl.trainer.validate import (HimacConfigError, check_himac_config, first_row, is_agent_env,
                                        validate_himac_config)


def _model(path, vision: bool = False) -> str:
    path.mkdir(parents=True, exist_ok=True)
    config = {"model_type": "qwen2_5_vl" if vision else "qwen2"}
    if vision:
        config["vision_config"] = {"depth": 2}
    (path / "config.json").write_text(json.dumps(config))
    return str(path)


@pytest.fixture
def base(tmp_path):
    """A valid HiMAC-on-Sokoban config holding every key the validation reads."""
    return OmegaConf.create({
        "himac": {"env": "sokoban", "group_size": 4, "cpu_mode": False, "model": "smollm2",
                  "schedule": {"mode": "coevolve", "phase_length": 10, "start_phase": "macro"},
                  "update_budget": {"mini_batch_turns": 64, "macro_mini_batch_turns": 32},
                  "advantage": {"norm_by_std": True, "gamma": 0.95, "step_weight": 1.0},
                  "agent": {"max_env_steps": 15, "subgoal_step_budget": 4}},
        "algorithm": {"adv_estimator": "himac"},
        "actor_rollout_ref": {"rollout": {"n": 1, "name": "vllm"}, "model": {"path": _model(tmp_path / "qwen")}},
        "data": {"train_files": "auto", "val_files": "auto"},
        "trainer": {"v1": {"trainer_mode": "sync"}},
    })


def _with(config, **changes):
    config = OmegaConf.create(OmegaConf.to_container(config))
    for key, value in changes.items():
        OmegaConf.update(config, key.replace("__", "."), value, force_add=True)
    return config


def _messages(config) -> list[str]:
    with pytest.raises(HimacConfigError) as info:
        validate_himac_config(config)
    assert [str(p) for p in info.value.problems] == [line[4:] for line in str(info.value).splitlines()[1:]]
    return [str(p) for p in info.value.problems]


def test_good_configs_pass(base, tmp_path):
    validate_himac_config(base)
    for estimator in ("episode_grpo", "gigpo"):
        validate_himac_config(_with(base, himac__schedule__mode="flat", algorithm__adv_estimator=estimator))
    for mode in ("joint", "macro", "micro"):
        validate_himac_config(_with(base, himac__schedule__mode=mode))
    for mode in ("flat", "coevolve"):  # verl's estimators: the trainer applies no schedule
        validate_himac_config(_with(base, himac__env="arithmetic", himac__schedule__mode=mode,
                                    algorithm__adv_estimator="grpo", actor_rollout_ref__rollout__n=4))
    validate_himac_config(_with(base, himac__cpu_mode=True, actor_rollout_ref__rollout__name="hf_cpu",
                                actor_rollout_ref__model__path="auto", himac__model="tiny"))
    vl = _model(tmp_path / "qwen_vl", vision=True)
    validate_himac_config(_with(base, himac__env_kwargs={"observation": "image"}, actor_rollout_ref__model__path=vl))
    # the validation reads absent optional sections as their defaults (group 8, coevolve, update budget)
    minimal = _with(base)
    for key in ("group_size", "schedule", "update_budget", "advantage", "agent"):
        del minimal.himac[key]
    validate_himac_config(minimal)


@pytest.mark.parametrize("changes, expected", [
    (dict(himac__env="minecraft"), "himac.env='minecraft': is not a known env"),
    (dict(himac__env=None), "himac.env=None: is not set"),
    (dict(himac__group_size=1), "himac.group_size=1: must be an int >= 2"),
    (dict(himac__group_size="8"), "himac.group_size='8'"),
    (dict(actor_rollout_ref__rollout__n=8), "actor_rollout_ref.rollout.n=8: must be 1"),
    (dict(algorithm__adv_estimator="gigpo"), "algorithm.adv_estimator='gigpo': himac.schedule.mode='coevolve'"),
    (dict(algorithm__adv_estimator="grpo", himac__schedule__mode="joint"), "algorithm.adv_estimator='grpo'"),
    (dict(himac__schedule__mode="flat"), "algorithm.adv_estimator='himac': himac.schedule.mode='flat'"),
    (dict(himac__schedule__mode="flat", algorithm__adv_estimator="grpo"),
     "algorithm.adv_estimator='grpo': himac.schedule.mode='flat' (baseline) needs one of"),
    (dict(himac__env="arithmetic", himac__schedule__mode="flat"),
     "algorithm.adv_estimator='himac': himac.env='arithmetic'"),
    (dict(himac__env="arithmetic", himac__schedule__mode="flat", algorithm__adv_estimator="grpo"),
     "actor_rollout_ref.rollout.n=1: GRPO on the arithmetic task"),
    (dict(himac__cpu_mode=True), "actor_rollout_ref.rollout.name='vllm': himac.cpu_mode=true needs 'hf_cpu'"),
    (dict(himac__cpu_mode=True, actor_rollout_ref__rollout__name="sglang"), "rollout.name='sglang'"),
    (dict(himac__schedule__phase_length=0), "himac.schedule.phase_length=0 must be an integer >= 1"),
    (dict(himac__schedule__mode="alternate"), "himac.schedule.mode='alternate' is not one of"),
    (dict(himac__schedule__start_phase="micr"), "himac.schedule.start_phase='micr'"),
    (dict(himac__optim_steps_per_update=2), "himac.optim_steps_per_update=2: was replaced by himac.update_budget"),
    (dict(himac__update_budget__mini_batch_turns=0), "himac.update_budget.mini_batch_turns=0 must be an int >= 1"),
    (dict(himac__update_budget__mini_batch_turn=8), "himac.update_budget.mini_batch_turn=8: unknown key; did you mean 'mini_batch_turns'?"),
    (dict(himac__advantage__stats="episodes"), "stats is 'episodes'"),
    (dict(himac__advantage__gamma=2.0), "gamma is 2.0"),
    (dict(himac__advantage__norm_by_sdt=True), "himac.advantage.norm_by_sdt=True: unknown key; did you mean 'norm_by_std'?"),
    (dict(himac__agent__blueprint_selection="worst"), "himac.agent.blueprint_selection='worst'"),
    (dict(trainer__v1__trainer_mode="async"), "trainer.v1.trainer_mode='async'"),
    (dict(actor_rollout_ref__model__path="Qwen/Qwen2.5-1.5B-Instruct"),
     "actor_rollout_ref.model.path='Qwen/Qwen2.5-1.5B-Instruct': is not a local model folder"),
    (dict(actor_rollout_ref__model__path="auto", himac__model="llama"), "himac.model='llama'"),
    (dict(himac__env_kwargs={"observation": "image"}), "himac.env_kwargs.observation='image': Sokoban images need"),
    (dict(himac__env_kwargs={"observation": "both"}, actor_rollout_ref__model__path="auto"),
     "himac.env_kwargs.observation='both'"),
    (dict(data__train_files="/no/such/train.parquet"), "data.train_files='/no/such/train.parquet': file not found"),
    (dict(data__val_files=["auto", "/x.parquet"]), "'auto' stands for the whole list"),
    (dict(data__val_files=[]), "data.val_files=[]: no data files"),
    (dict(himac__data={"val_splits": ["train"]}), "himac.data.val_splits: 'train'"),
])
def test_bad_settings_are_named(base, changes, expected):
    messages = _messages(_with(base, **changes))
    assert any(expected in m for m in messages), messages


def test_envs_without_datasets_need_files(base, tmp_path):
    bandit = _with(base, himac__env="bandit")
    messages = _messages(bandit)
    assert messages == ["data.train_files='auto': himac.env='bandit' has no built-in datasets (auto covers sokoban, "
                        "alfworld, webshop): give parquet files",
                        "data.val_files='auto': himac.env='bandit' has no built-in datasets (auto covers sokoban, "
                        "alfworld, webshop): give parquet files"]
    train = _files(tmp_path, "bandit", "train", "himac_agent")
    val = _files(tmp_path, "bandit", "test", "himac_agent", himac_phase="eval")
    validate_himac_config(_with(bandit, data__train_files=train, data__val_files=val))
    assert is_agent_env("my_pkg.envs:GridWorld") and is_agent_env("sokoban")
    assert not is_agent_env("my pkg:Grid") and not is_agent_env("minecraft") and not is_agent_env(":X")


def test_all_problems_are_reported_together(base):
    messages = _messages(_with(base, himac__cpu_mode=True, himac__group_size=0, actor_rollout_ref__rollout__n=2,
                               himac__update_budget__macro_mini_batch_turns=0))
    keys = [m.split("=")[0] for m in messages]
    assert keys == ["himac.group_size", "actor_rollout_ref.rollout.n", "actor_rollout_ref.rollout.name",
                    "himac.update_budget"], messages


def _files(tmp_path, env, split, agent, **extra) -> str:
    path = tmp_path / f"{env}-{split}-{agent}-{len(extra)}.parquet"
    pd.DataFrame(task_rows(env, split, ["1", "2"], agent, **extra)).to_parquet(path)
    return str(path)


def test_explicit_data_files_must_match_the_method(base, tmp_path):
    train = str(build_dataset(DatasetSpec("sokoban", "train", "himac_agent", size=4), tmp_path))
    val = str(build_dataset(DatasetSpec("sokoban", "test", "himac_agent", size=2), tmp_path))
    good = _with(base, data__train_files=train, data__val_files=[val])
    validate_himac_config(good)

    flat = _with(good, himac__schedule__mode="flat", algorithm__adv_estimator="gigpo")
    messages = _messages(flat)
    assert len(messages) == 2 and all("rows are for agent_name='himac_agent'" in m for m in messages), messages
    assert f"data.train_files={train!r}" in messages[0] and "needs 'flat_agent'" in messages[0]

    other_env = _files(tmp_path, "webshop", "train", "himac_agent")
    messages = _messages(_with(good, data__train_files=other_env))
    assert messages == [f"data.train_files={other_env!r}: rows are for himac_env='webshop' but himac.env='sokoban'"]

    no_eval = _files(tmp_path, "sokoban", "test", "himac_agent")
    messages = _messages(_with(good, data__val_files=no_eval))
    assert messages == [f"data.val_files={no_eval!r}: validation rows need himac_phase='eval' (one greedy episode "
                        "per task), found None"]

    arithmetic = tmp_path / "arith.parquet"
    pd.DataFrame([{"data_source": "himac/arithmetic", "prompt": [{"role": "user", "content": "1+1"}]}]).to_parquet(
        arithmetic)
    messages = _messages(_with(good, data__train_files=str(arithmetic)))
    assert "rows are for agent_name=None" in messages[0]

    arithmetic_env = _with(good, himac__env="arithmetic", algorithm__adv_estimator="grpo",
                           actor_rollout_ref__rollout__n=4)
    assert _messages(arithmetic_env) == [
        f"data.{k}_files={f!r}: rows are for our agent loop 'himac_agent' (env 'sokoban') but "
        "himac.env='arithmetic': set himac.env to the rows' env" for k, f in (("train", train), ("val", val))]
    validate_himac_config(_with(arithmetic_env, data__train_files=str(arithmetic), data__val_files=str(arithmetic)))

    empty = tmp_path / "empty.parquet"
    pd.DataFrame({"agent_name": pd.Series([], dtype=str)}).to_parquet(empty)
    assert _messages(_with(good, data__train_files=str(empty))) == [f"data.train_files={str(empty)!r}: has no rows"]


def test_first_row_reads_parquet_and_jsonl(tmp_path):
    rows = task_rows("alfworld", "valid_seen", ["a/b", "c/d"], "flat_agent", himac_phase="eval")
    parquet, jsonl = tmp_path / "rows.parquet", tmp_path / "rows.jsonl"
    pd.DataFrame(rows).to_parquet(parquet)
    jsonl.write_text("\n".join(json.dumps(r) for r in rows))
    expected = {"agent_name": "flat_agent", "himac_task_id": "a/b", "himac_phase": "eval"}
    for path in (parquet, jsonl):
        assert first_row(str(path), ["agent_name", "himac_task_id", "himac_phase", "missing"]) == expected
    with pytest.raises(ValueError, match="unsupported data file type"):
        first_row(str(tmp_path / "rows.csv"), ["agent_name"])


def test_check_returns_problems_without_raising(base):
    assert check_himac_config(base) == []
    problems = check_himac_config(_with(base, himac__group_size=1))
    assert [(p.key, p.value) for p in problems] == [("himac.group_size", 1)]


# The strict config: each bad setting a user might type, composed exactly as `python -m himac_verl.main`
# composes it (hydra, in process), is rejected before Ray starts with its key named; nothing is coerced.
STRICT_CASES = [
    (["++himac.shedule.mode=flat"], "himac.shedule={'mode': 'flat'}: unknown key; did you mean 'schedule'?"),
    (["++himac.schedule.mdoe=flat"], "himac.schedule.mdoe='flat': unknown key; did you mean 'mode'?"),
    (["+himac.foo=1"], "himac.foo=1: unknown key"),
    (["++himac.agent.use_sub_done=fasle"], "himac.agent.use_sub_done='fasle': must be true or false, got str"),
    (["himac.schedule.phase_length=2.5"], "himac.schedule.phase_length=2.5: must be an integer, got float"),
    (["himac.update_budget.mini_batch_turns=true"], "himac.update_budget.mini_batch_turns=True: must be an integer"),
    (["himac.cpu_mode=yes"], "himac.cpu_mode='yes': must be true or false"),
    (["++himac.pool.num_worker=3"], "EnvPool: unknown setting 'num_worker'"),
    (["himac.pool.num_workers=0"], "himac.pool={'num_workers': 0}: EnvPool num_workers must be an int >= 1, got 0"),
    (["++himac.env_kwargs.observaton=text"], "SokobanEnv has no option 'observaton'"),
    (["himac.env_kwargs.observation=txt"], "SokobanEnv observation must be one of"),
    (["himac.agent.template_version=v9"], "himac.agent.template_version='v9': no packaged prompt template"),
    (["himac.agent.parse_failure_return=nan"], "himac.agent.parse_failure_return=nan: must be a finite number"),
    (["himac.advantage.gamma=inf"], "himac.advantage.gamma=inf: must be a finite number"),
    (["himac.agent.max_env_steps=abc"], "himac.agent.max_env_steps='abc': must be an integer, got str"),
    (["himac.val_levels_between=0"], "himac.val_levels_between=0: must be > 0"),
    (["algorithm.rollout_correction.rollout_is=token"],
     "algorithm.rollout_correction.rollout_is='token': himac_verl's advantage step does not apply"),
    (["algorithm.rollout_correction.rollout_rs=token_k1"], "algorithm.rollout_correction.rollout_rs='token_k1'"),
]


@pytest.fixture(scope="module")
def compose_main():
    from himac_verl.trainer.validate import compose

    return lambda overrides: compose(["mode=cpu", "+preset=sokoban_learning", *overrides])


@pytest.mark.parametrize("overrides, expected", STRICT_CASES, ids=[c[0][0] for c in STRICT_CASES])
def test_strict_config_names_each_bad_setting(compose_main, overrides, expected):
    messages = _messages(compose_main(overrides))
    assert any(expected in m for m in messages), messages


def test_strict_config_reports_every_problem_at_once(compose_main):
    """Bad settings in several sections, and an unknown env that used to hide the group checks."""
    overrides = ["himac.env=sokobn", "himac.group_size=1", "actor_rollout_ref.rollout.n=4",
                 "++himac.agent.use_sub_done=fasle", "++himac.agent.max_env_steps=abc",
                 "himac.schedule.phase_length=2.5", "++himac.pool.num_worker=3"]
    keys = [m.split("=", 1)[0] for m in _messages(compose_main(overrides))]
    assert sorted(keys) == sorted(["himac.agent.max_env_steps", "himac.agent.use_sub_done", "himac.schedule.phase_length",
                                   "himac.pool", "himac.env", "himac.group_size", "actor_rollout_ref.rollout.n"]), keys


def test_strict_config_accepts_the_shipped_settings(compose_main):
    assert check_himac_config(compose_main([])) == []
    assert check_himac_config(compose_main(["himac.schedule.mode=flat", "algorithm.adv_estimator=gigpo",
                                            "himac.agent.use_sub_done=false", "++himac.eval_run.seed=3",
                                            "himac.advantage.gamma=1"])) == []
