"""Checks of a composed trainer config that must fail BEFORE Ray starts (a bad key found inside a Ray
actor costs minutes of start-up and often surfaces as a silent failed group instead of an error).

``validate_himac_config(config)`` collects every problem and raises one :class:`HimacConfigError` that
lists them, each as ``key=value: reason``. It is pure (no Ray, no verl trainer imports, so it does not fix
verl's platform) and cheap: data files are checked for existence and only their first row is read.

Compatibility rules (the method is one choice, seen in three places that must agree):

    himac.schedule.mode        algorithm.adv_estimator     agent_name of the rows
    coevolve|joint|macro|micro himac                       himac_agent
    flat                       episode_grpo | gigpo        flat_agent
    (himac.env=arithmetic, the built-in CPU-mode task: verl's own estimators, e.g. grpo; no schedule)

Our loops make a task's whole group inside one agent-loop call, so they need ``rollout.n = 1`` and
``himac.group_size >= 2``. CPU mode needs the ``hf_cpu`` rollout server (vllm, sglang and trtllm need GPUs).

Dry run: ``python -m himac_verl.trainer.validate [overrides...]`` composes the config exactly as
``python -m himac_verl.main`` does, runs these checks and verl's own ``validate_config``, resolves the
config and prints it, without starting Ray (the recipes' ``HIMAC_DRY_RUN=1`` calls it).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from himac_verl.config.strict import Problem, strict_problems
from himac_verl.config.strict import to_plain as _plain

AUTO = "auto"
BUILTIN_TASK = "arithmetic"
HIMAC_MODES = ("coevolve", "joint", "macro", "micro")
FLAT_MODE = "flat"
HIMAC_ESTIMATOR = "himac"
FLAT_ESTIMATORS = ("episode_grpo", "gigpo")
OUR_ESTIMATORS = (HIMAC_ESTIMATOR,) + FLAT_ESTIMATORS
HIMAC_AGENT, FLAT_AGENT = "himac_agent", "flat_agent"
CPU_ROLLOUT = "hf_cpu"
GPU_ONLY_ROLLOUTS = ("vllm", "sglang", "trtllm")
IMAGE_OBSERVATIONS = ("image", "both")
BUILTIN_MODELS = ("sokoban_agent", "smollm2", "tiny")  # himac.model choices that main.resolve_model_path builds (text-only)


class HimacConfigError(ValueError):
    """Raised by :func:`validate_himac_config`; ``problems`` holds each rejected setting."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid himac_verl config ({len(self.problems)} problem(s)):\n{lines}")


def _select(config: Any, key: str, default: Any = None) -> Any:
    value = OmegaConf.select(config, key, default=default)
    return default if value is None else value


def schedule_mode(config: Any) -> str:
    """``himac.schedule.mode`` (the schedule's default, coevolve, when the section is absent)."""
    from himac_verl.trainer.coevolution import CoEvolutionSchedule

    return str(_select(config, "himac.schedule.mode", CoEvolutionSchedule.mode))


def expected_agent_name(config: Any) -> str | None:
    """The agent loop the config's method needs (None for the built-in arithmetic task: verl's own loop)."""
    if _select(config, "himac.env") == BUILTIN_TASK:
        return None
    return FLAT_AGENT if schedule_mode(config) == FLAT_MODE else HIMAC_AGENT


def agent_env_names() -> tuple[str, ...]:
    """Envs our agent loops play: ``himac_verl.envs.ENV_CLASSES`` (sokoban, alfworld, webshop, bandit...)."""
    from himac_verl.envs import ENV_CLASSES

    return tuple(ENV_CLASSES)


def is_agent_env(env: Any) -> bool:
    """A registered env name or a ``"module:Class"`` path (what ``make_env`` accepts)."""
    if not isinstance(env, str):
        return False
    if env in agent_env_names():
        return True
    module, _, cls = env.partition(":")
    return bool(module) and bool(cls) and all(part.isidentifier() for part in module.split(".")) \
        and cls.isidentifier()


def has_datasets(env: Any) -> bool:
    """Envs whose datasets ``data.*_files=auto`` can build (``tasks.env_datasets.ENV_SPLITS``)."""
    from himac_verl.tasks.env_datasets import ENV_SPLITS

    return env in ENV_SPLITS


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _files(value: Any) -> list[str]:
    value = _plain(value)
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [str(value)]


def first_row(path: str, columns: Iterable[str]) -> dict[str, Any] | None:
    """The requested columns of a data file's first row (absent columns left out); None when empty.

    Reads one record batch of a parquet file (or the first line of a JSON-lines file), never the file.
    """
    wanted = list(columns)
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        present = [c for c in wanted if c in pf.schema_arrow.names]
        if pf.metadata.num_rows == 0:
            return None
        if not present:
            return {}
        batch = next(pf.iter_batches(batch_size=1, columns=present))
        return {c: batch.column(c)[0].as_py() for c in present}
    if path.endswith(".jsonl") or path.endswith(".json"):
        with open(path) as f:
            line = f.readline().strip()
        if not line:
            return None
        record = json.loads(line)
        return {c: record[c] for c in wanted if c in record}
    raise ValueError(f"unsupported data file type (verl reads .parquet, .json, .jsonl): {path}")


# ---------------------------------------------------------------------------------------------- checks
def _check_env(config, problems: list[Problem]) -> str | None:
    env = _select(config, "himac.env")
    if env != BUILTIN_TASK and not is_agent_env(env):
        why = "is not set" if env is None else "is not a known env"
        known = agent_env_names() + (BUILTIN_TASK,)
        problems.append(Problem("himac.env", env, f"{why}; use one of {known} or a 'module:Class' path"))
        return None
    return str(env)


def _check_trainer_mode(config, problems: list[Problem]) -> None:
    mode = _select(config, "trainer.v1.trainer_mode", "sync")
    if mode != "sync":
        problems.append(Problem("trainer.v1.trainer_mode", mode,
                                "himac_verl runs verl's sync semantics; keep 'sync' (choose the trainer class "
                                "with himac.trainer_class)"))


def _check_schedule(config, problems: list[Problem]) -> str | None:
    from himac_verl.trainer.coevolution import CoEvolutionSchedule

    section = _select(config, "himac.schedule", {})
    try:
        return CoEvolutionSchedule.from_config(section).mode
    except (TypeError, ValueError) as err:
        message = str(err)
        if not message.startswith("himac.schedule"):
            message = f"himac.schedule: {message}"
        problems.append(Problem("himac.schedule", _plain(section), message))
        return None


def _check_method(config, env: str | None, mode: str | None, problems: list[Problem]) -> None:
    estimator = _select(config, "algorithm.adv_estimator")
    if env is None or mode is None:
        return
    if env == BUILTIN_TASK:
        if estimator in OUR_ESTIMATORS:
            problems.append(Problem("algorithm.adv_estimator", estimator,
                                    f"himac.env={BUILTIN_TASK!r} is a single-turn task without the role fields our "
                                    "estimators read; use one of verl's (e.g. grpo)"))
        return  # the trainer applies no schedule with verl's estimators
    if mode in HIMAC_MODES:
        if estimator != HIMAC_ESTIMATOR:
            problems.append(Problem("algorithm.adv_estimator", estimator,
                                    f"himac.schedule.mode={mode!r} trains HiMAC's planner/executor: it needs "
                                    f"'{HIMAC_ESTIMATOR}' (flat baselines: himac.schedule.mode=flat with "
                                    f"{' or '.join(FLAT_ESTIMATORS)})"))
    elif estimator not in FLAT_ESTIMATORS:
        extra = " (verl's grpo is only for the built-in arithmetic task: it would mix the turns of an episode)" \
            if estimator == "grpo" else ""
        problems.append(Problem("algorithm.adv_estimator", estimator,
                                f"himac.schedule.mode='flat' (baseline) needs one of {FLAT_ESTIMATORS}{extra}"))


def _check_group(config, env: str | None, problems: list[Problem]) -> None:
    n = _select(config, "actor_rollout_ref.rollout.n", 1)
    if env == BUILTIN_TASK:
        if _select(config, "algorithm.adv_estimator") == "grpo" and (not _is_int(n) or n < 2):
            problems.append(Problem("actor_rollout_ref.rollout.n", n,
                                    "GRPO on the arithmetic task groups the rollout.n samples of a prompt: use >= 2"))
        return
    group = _select(config, "himac.group_size", 8)
    if not _is_int(group) or group < 2:
        problems.append(Problem("himac.group_size", group,
                                "must be an int >= 2: group-relative advantages of a group of one are all zero"))
    if n != 1:
        problems.append(Problem("actor_rollout_ref.rollout.n", n,
                                "must be 1 with himac_verl's agent loops: one call makes a task's whole group "
                                "(its size is himac.group_size)"))


def _check_rollout(config, problems: list[Problem]) -> None:
    cpu_mode = _select(config, "himac.cpu_mode", False)
    name = _select(config, "actor_rollout_ref.rollout.name")
    if cpu_mode is True and name != CPU_ROLLOUT:
        gpu = " is GPU-only" if name in GPU_ONLY_ROLLOUTS else " is not a CPU rollout backend"
        problems.append(Problem("actor_rollout_ref.rollout.name", name,
                                f"himac.cpu_mode=true needs '{CPU_ROLLOUT}'; {name!r}{gpu}"))
    elif not isinstance(cpu_mode, bool):
        problems.append(Problem("himac.cpu_mode", cpu_mode, "must be true or false"))


def _check_update(config, problems: list[Problem]) -> None:
    from himac_verl.trainer.roles import UpdateBudget

    section = _select(config, "himac.update_budget")
    try:
        UpdateBudget.from_config(OmegaConf.to_container(section, resolve=True) if section is not None else None)
    except (TypeError, ValueError) as err:
        problems.append(Problem("himac.update_budget", _plain(section), str(err)))


def _check_advantage(config, problems: list[Problem]) -> None:
    from himac_verl.advantage.config import AdvantageConfig

    section = _select(config, "himac.advantage")
    try:
        AdvantageConfig.from_config(section)
    except (TypeError, ValueError) as err:
        problems.append(Problem("himac.advantage", _plain(section), str(err)))


def _check_agent(config, env: str | None, problems: list[Problem]) -> None:
    if not is_agent_env(env):
        return
    from himac_verl.agent.config import LoopSettings

    try:
        LoopSettings.from_config(config, env)
    except (TypeError, ValueError) as err:
        # LoopSettings names the key ("invalid agent-loop setting KEY=VALUE"); report it under that key
        # unless an earlier check already did (the loop re-checks himac.group_size, for one)
        match = re.match(r"invalid agent-loop setting ([\w.]+)=", str(err))
        key = match.group(1) if match else "himac.agent"
        if all(p.key != key for p in problems):
            problems.append(Problem(key, _plain(_select(config, key)), str(err)))


def _check_data(config, env: str | None, problems: list[Problem]) -> None:
    expected = expected_agent_name(config) if env is not None else None
    for key in ("data.train_files", "data.val_files"):
        value = _plain(_select(config, key))
        files = _files(value)
        if not files:
            problems.append(Problem(key, value, "no data files: give parquet paths or 'auto'"))
            continue
        if files == [AUTO]:
            if is_agent_env(env) and not has_datasets(env):
                problems.append(Problem(key, value, f"himac.env={env!r} has no built-in datasets (auto covers "
                                                    "sokoban, alfworld, webshop): give parquet files"))
            elif has_datasets(env):  # auto builds our datasets: check the settings that decide them now
                try:
                    from himac_verl.tasks.env_datasets import auto_specs

                    auto_specs(config)
                except (TypeError, ValueError) as err:
                    problems.append(Problem("himac.data", _plain(_select(config, "himac.data")), str(err)))
            continue
        for path in files:
            if path == AUTO:
                problems.append(Problem(key, value, "'auto' stands for the whole list, not one of its entries"))
                continue
            local = os.path.expanduser(path)
            if not os.path.isfile(local):
                problems.append(Problem(key, path, "file not found"))
                continue
            if not is_agent_env(env) and env != BUILTIN_TASK:
                continue
            try:
                row = first_row(local, ("agent_name", "himac_env", "himac_phase"))
            except Exception as err:  # noqa: BLE001 - any unreadable file is reported with its path
                problems.append(Problem(key, path, f"cannot read its first row: {type(err).__name__}: {err}"))
                continue
            if row is None:
                problems.append(Problem(key, path, "has no rows"))
                continue
            agent = row.get("agent_name")
            if env == BUILTIN_TASK:
                if agent in (HIMAC_AGENT, FLAT_AGENT):
                    problems.append(Problem(key, path, f"rows are for our agent loop {agent!r} (env "
                                                       f"{row.get('himac_env')!r}) but himac.env={BUILTIN_TASK!r}: "
                                                       "set himac.env to the rows' env"))
                continue
            if agent != expected:
                problems.append(Problem(key, path,
                                        f"rows are for agent_name={agent!r} but himac.schedule.mode="
                                        f"{schedule_mode(config)!r} needs {expected!r} (build matching rows with "
                                        "examples/prepare_data.py or use 'auto')"))
            if row.get("himac_env") != env:
                problems.append(Problem(key, path, f"rows are for himac_env={row.get('himac_env')!r} but "
                                                   f"himac.env={env!r}"))
            if key == "data.val_files" and row.get("himac_phase") != "eval":
                problems.append(Problem(key, path, f"validation rows need himac_phase='eval' (one greedy episode "
                                                   f"per task), found {row.get('himac_phase')!r}"))


def _model_config(path: str) -> dict | None:
    config_file = os.path.join(path, "config.json")
    if not os.path.isfile(config_file):
        return None
    with open(config_file) as f:
        return json.load(f)


def _check_model(config, env: str | None, problems: list[Problem]) -> None:
    path = _select(config, "actor_rollout_ref.model.path")
    choice = _select(config, "himac.model")
    hf_config: dict | None = None
    if path == AUTO:
        if choice not in BUILTIN_MODELS and not os.path.isdir(os.path.expanduser(str(choice))):
            problems.append(Problem("himac.model", choice,
                                    f"with actor_rollout_ref.model.path=auto it must be one of {BUILTIN_MODELS} or a "
                                    "local model folder"))
        elif choice not in BUILTIN_MODELS:
            hf_config = _model_config(os.path.expanduser(str(choice)))
    elif path is None or not os.path.isdir(os.path.expanduser(str(path))):
        problems.append(Problem("actor_rollout_ref.model.path", path,
                                "is not a local model folder (himac_verl never downloads at run time: set it, or "
                                "MODEL_PATH in the recipes, to a folder holding the HF model)"))
    else:
        hf_config = _model_config(os.path.expanduser(str(path)))
    observation = _select(config, "himac.env_kwargs.observation", "text")
    if env == "sokoban" and observation in IMAGE_OBSERVATIONS:
        text_only = (path == AUTO and choice in BUILTIN_MODELS) or (hf_config is not None and
                                                                   "vision_config" not in hf_config)
        if text_only:
            model = choice if path == AUTO else path
            problems.append(Problem("himac.env_kwargs.observation", observation,
                                    f"Sokoban images need a vision-language model (e.g. Qwen2.5-VL); {model!r} is "
                                    "text-only (use himac.env_kwargs.observation=text)"))


def _check_rollout_correction(config, problems: list[Problem]) -> None:
    """Our advantage step replaces verl's (it does not call its rollout-correction stage): a non-default
    importance-sampling or rejection-sampling setting would be silently ignored, so it is rejected."""
    if _select(config, "algorithm.adv_estimator") not in OUR_ESTIMATORS:
        return
    for key in ("algorithm.rollout_correction.rollout_is", "algorithm.rollout_correction.rollout_rs"):
        value = _select(config, key)
        if value is not None:
            problems.append(Problem(key, _plain(value), "himac_verl's advantage step does not apply verl's rollout "
                                                        "correction: leave it null"))


def _check_templates(config, env: str | None, mode: str | None, problems: list[Problem]) -> None:
    """The prompt templates the method's roles need exist (``himac.agent.template_version`` / ``template_dir``)."""
    if not is_agent_env(env) or env not in agent_env_names() or mode is None:
        return
    from himac_verl.agent.prompts import executor_template, load_template

    version = _select(config, "himac.agent.template_version")
    folder = _select(config, "himac.agent.template_dir")
    kwargs = {k: v for k, v in (("version", version), ("template_dir", folder)) if v is not None}
    try:
        if mode == FLAT_MODE:
            load_template(env, "flat", **kwargs)
        else:
            load_template(env, "planner", **kwargs)
            executor_template(env, _select(config, "himac.agent.use_sub_done", True) is not False, **kwargs)
    except (FileNotFoundError, ValueError) as err:
        key = "himac.agent.template_dir" if folder is not None else "himac.agent.template_version"
        problems.append(Problem(key, folder if folder is not None else version, str(err)))


def check_himac_config(config: Any) -> list[Problem]:
    """Every problem of a composed trainer config (empty list = it may start). Pure; reads only first rows.

    The strict key and type checks (``config/strict.py``) come first; a section they found fault with is
    not read again by the checks below (its owner would fail on the first bad value and hide the rest)."""
    strict = strict_problems(config)
    problems: list[Problem] = []
    env = _check_env(config, problems)
    _check_trainer_mode(config, problems)
    mode = _check_schedule(config, problems)
    _check_method(config, env, mode, problems)
    _check_group(config, env, problems)
    _check_rollout(config, problems)
    _check_update(config, problems)
    _check_advantage(config, problems)
    _check_agent(config, env, problems)
    _check_data(config, env, problems)
    _check_model(config, env, problems)
    _check_rollout_correction(config, problems)
    if not any(p.key.startswith("himac.agent.template") for p in strict):
        _check_templates(config, env, mode, problems)
    flagged = [p.key for p in strict]
    problems = strict + [p for p in problems
                         if not any(k == p.key or k.startswith(p.key + ".") for k in flagged)]
    unique: dict[str, Problem] = {}
    for problem in problems:  # e.g. one bad himac.data setting seen through both data keys
        unique.setdefault(str(problem), problem)
    return list(unique.values())


def validate_himac_config(config: Any) -> None:
    """Raise :class:`HimacConfigError` naming every bad key and value; call before Ray starts."""
    problems = check_himac_config(config)
    if problems:
        raise HimacConfigError(problems)


# ---------------------------------------------------------------------------------------------- dry run
def compose(overrides: list[str]) -> DictConfig:
    """Our trainer config (``himac_trainer`` + overrides), as ``python -m himac_verl.main`` composes it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    with initialize_config_module(config_module="himac_verl.config", version_base=None):
        return hydra_compose(config_name="himac_trainer", overrides=list(overrides))


def verl_validate(config: DictConfig) -> None:
    """verl's own pre-flight check (batch-size divisibility, micro batches...), as the entry point runs it.

    Its imports do not resolve verl's platform (checked: ``platform_manager._current_platform`` stays
    None), so this is safe in any process, CPU mode or not.
    """
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))


def dry_run(overrides: list[str], out=sys.stdout) -> DictConfig:
    """Compose, validate (ours, then verl's), resolve and print the config. Starts nothing."""
    config = compose(overrides)
    validate_himac_config(config)
    verl_validate(config)
    resolved = OmegaConf.to_container(config, resolve=True)
    print(OmegaConf.to_yaml(resolved), file=out)
    describe_auto_data(config, out=sys.stderr)
    return config


def describe_auto_data(config: DictConfig, out=sys.stderr) -> None:
    """Say what ``data.*_files=auto`` will build (task counts and cache paths); lists tasks, writes nothing."""
    if not has_datasets(_select(config, "himac.env")):
        return
    from himac_verl.tasks.env_datasets import auto_specs, dataset_path, select_task_ids

    train, vals = auto_specs(config)
    for key, specs in (("data.train_files", [train]), ("data.val_files", vals)):
        if _files(_select(config, key)) != [AUTO]:
            continue
        for spec in specs:
            print(f"{key}=auto: {spec.env}/{spec.split}, {len(select_task_ids(spec))} tasks, "
                  f"agent_name={spec.agent_name} -> {dataset_path(spec)}", file=out)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print("usage: python -m himac_verl.trainer.validate [hydra overrides...]\n"
              "Compose the himac_verl trainer config, validate it (himac_verl's checks and verl's), print it.")
        return 0
    try:
        dry_run(args)
    except HimacConfigError as err:
        print(f"DRY RUN FAILED\n{err}", file=sys.stderr)
        return 2
    print("DRY RUN OK: the config composes and validates (Ray was not started)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
