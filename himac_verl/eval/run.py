"""``python -m himac_verl.eval run``: play evaluation episodes through verl's own validation, then report.

Nothing here plays an episode. The run builds the evaluation datasets (rows with ``himac_phase="eval"``:
one greedy episode per task), composes our trainer config with ``trainer.val_only=true
trainer.val_before_train=true`` (verl's ``fit`` then runs ``_validate`` once and returns) and calls
``himac_verl.main.run``: the same TaskRunner, trainer, agent-loop manager, agent loops (``himac_agent`` or
``flat_agent``), env pool and rollout server as training. The trainer's validation hook
(``himac.eval_log_file``, see ``himac_verl.eval.episodes``) writes one record per episode to
``<out>/episodes.jsonl``; then the ``report`` code prints the tables and writes CSV / Markdown / PNG.

Task lists are fixed by (env, split, size, seed) with ``himac_verl.tasks.env_datasets``: ``size`` tasks of
the split drawn with ``random.Random(seed)`` and kept in the split's order (ALFWorld: the whole split
when no ``--limit``; WebShop / Sokoban: 128 when no ``--limit``, verl-agent's validation size). The exact
list is written to ``<out>/run.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from himac_verl.eval.episode_log import EpisodeLogError, read_episodes, write_episodes
from himac_verl.eval.episodes import NO_EPISODE_FLAG, RunInfo, missing_task_record

METHODS = {  # --method -> (agent loop, himac.schedule.mode, algorithm.adv_estimator)
    "himac": ("himac_agent", "coevolve", "himac"),
    "flat": ("flat_agent", "flat", "episode_grpo"),
}
LOG_NAME = "episodes.jsonl"
DEFAULT_PROMPT_LENGTH = 2048  # ALFWorld executor prompts stay under ~1k tokens over 10 steps (SmolLM2 tokenizer)
DEFAULT_RESPONSE_LENGTH = 256


@dataclass(frozen=True)
class EvalTask:
    task_uid: str
    task_type: str  # the table column (ALFWorld type; else the env name)


@dataclass(frozen=True)
class EvalPlan:
    env: str
    splits: tuple[str, ...]
    method: str
    model: str  # as the user named it
    model_path: str  # the HF folder verl loads
    seed: int
    files: tuple[str, ...]  # one parquet per split
    tasks: tuple[EvalTask, ...]


def resolve_model(choice: str) -> str:
    """``--model`` -> an HF folder: a built-in name (``sokoban_agent``, ``smollm2``, ``tiny``), an HF folder, or a checkpoint (its
    ``actor/huggingface`` folder, found from the step folder or the actor folder)."""
    from himac_verl.main import resolve_model_path
    from himac_verl.trainer.validate import BUILTIN_MODELS

    if choice in BUILTIN_MODELS:
        return resolve_model_path(choice)
    path = Path(os.path.expanduser(choice))
    if not path.is_dir():
        raise FileNotFoundError(f"--model {choice!r}: expected one of {BUILTIN_MODELS}, an HF model folder or a checkpoint")
    for candidate in (path, path / "huggingface", path / "actor" / "huggingface"):
        if (candidate / "config.json").is_file():
            weights = [*candidate.glob("*.safetensors"), *candidate.glob("pytorch_model*.bin")]
            if not weights:
                raise FileNotFoundError(
                    f"--model {choice!r}: {candidate} has a config but no weights (*.safetensors); save "
                    "checkpoints with actor_rollout_ref.actor.checkpoint.save_contents including 'hf_model'")
            return str(candidate.resolve())
    raise FileNotFoundError(f"--model {choice!r}: no config.json in it, in huggingface/ or in actor/huggingface/")


def plan_eval(env: str, splits: Sequence[str] | None, method: str, model: str, model_path: str, seed: int,
              limit: int | None, data_dir: Path, env_kwargs: dict[str, Any] | None = None) -> EvalPlan:
    """Build (once, content-addressed) the evaluation parquet files and list their tasks."""
    import pandas as pd

    from himac_verl.tasks.env_datasets import (
        DEFAULT_SIZES,
        DEFAULT_VAL_SPLITS,
        ENV_SPLITS,
        DatasetSpec,
        build_dataset,
        env_task_options,
    )

    if env not in ENV_SPLITS:
        raise ValueError(f"--env {env!r}: expected one of {sorted(ENV_SPLITS)}")
    if method not in METHODS:
        raise ValueError(f"--method {method!r}: expected one of {sorted(METHODS)}")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit {limit!r}: expected an int >= 1")
    splits = tuple(splits) if splits else DEFAULT_VAL_SPLITS[env]
    for split in splits:
        if not ENV_SPLITS[env].get(split, False):
            evals = sorted(s for s, is_eval in ENV_SPLITS[env].items() if is_eval)
            raise ValueError(f"--split {split!r} is not an evaluation split of {env} ({evals})")
    agent = METHODS[method][0]
    files, tasks = [], []
    for split in splits:
        spec = DatasetSpec(env, split, agent, size=limit or DEFAULT_SIZES.get((env, split)), seed=seed,
                           task_options=env_task_options(env, env_kwargs))
        path = build_dataset(spec, data_dir)
        files.append(str(path))
        for row in pd.read_parquet(path, columns=["data_source", "extra_info"]).itertuples():
            source = str(row.data_source)
            task_type = source.rsplit("/", 1)[1] if env == "alfworld" else env
            tasks.append(EvalTask(str(row.extra_info["task_uid"]), task_type))
    return EvalPlan(env, splits, method, model, model_path, seed, tuple(files), tuple(tasks))


def trainer_overrides(plan: EvalPlan, out: Path, gpu: bool, batch_size: int) -> list[str]:
    """Hydra overrides that turn our trainer config into one validation pass over ``plan``."""
    _, mode, estimator = METHODS[plan.method]
    files = ",".join(plan.files)
    return [
        *([] if gpu else ["mode=cpu"]),
        f"actor_rollout_ref.model.path={plan.model_path}",
        f"himac.env={plan.env}",
        f"himac.schedule.mode={mode}",
        f"algorithm.adv_estimator={estimator}",
        f"data.train_files=[{files}]",  # verl builds a train loader even for val_only; it is never drawn
        f"data.val_files=[{files}]",
        "data.train_batch_size=1",
        f"data.val_batch_size={batch_size}",
        f"data.max_prompt_length={DEFAULT_PROMPT_LENGTH}",
        f"data.max_response_length={DEFAULT_RESPONSE_LENGTH}",
        f"himac.data.seed={plan.seed}",
        "actor_rollout_ref.rollout.n=1",
        "actor_rollout_ref.actor.ppo_mini_batch_size=1",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1",
        "trainer.val_only=true",
        "trainer.val_before_train=true",
        "trainer.total_training_steps=1",
        "trainer.test_freq=-1",
        "trainer.save_freq=-1",
        "trainer.logger=[console]",
        f"trainer.experiment_name=eval_{plan.env}_{plan.method}",
        f"trainer.default_local_dir={out / 'checkpoints'}",
        f"himac.tensorboard_dir={out / 'tensorboard'}",
        f"++himac.eval_log_file={out / LOG_NAME}",
        f"++himac.eval_run.method={plan.method}",
        f"++himac.eval_run.model='{plan.model}'",
        f"++himac.eval_run.seed={plan.seed}",
    ]


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    with initialize_config_module(config_module="himac_verl.config", version_base=None):
        return hydra_compose(config_name="himac_trainer", overrides=overrides)


class _LogProgress:
    """A progress bar over the episode log's line count (the trainer runs in a Ray process; the log file
    is what the driver can see). Records arrive one validation batch at a time (``--batch-size``)."""

    def __init__(self, path: Path, total: int, console: Console):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.path, self.total = path, total
        self.progress = Progress(TextColumn("episodes"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 console=console)
        self.task = self.progress.add_task("episodes", total=total)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _count(self) -> int:
        try:
            with self.path.open("rb") as f:
                return sum(1 for line in f if line.strip())
        except FileNotFoundError:
            return 0

    def _poll(self) -> None:
        while not self._stop.wait(1.0):
            self.progress.update(self.task, completed=self._count())

    def __enter__(self):
        self.progress.start()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.progress.update(self.task, completed=self._count())
        self.progress.stop()


def run_eval(args: argparse.Namespace, console: Console | None = None):
    """The ``run`` sub-command (see the module docstring). Returns the report's ``ReportResult``."""
    from omegaconf import OmegaConf

    from himac_verl.eval import report
    from himac_verl.main import run as run_trainer

    console = console or Console()
    out = Path(args.out).expanduser().resolve()
    log = out / LOG_NAME
    if log.exists() and log.stat().st_size and not args.overwrite:
        raise FileExistsError(f"{log} exists: pass --overwrite to replace it, or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    if log.exists():
        log.unlink()
    if args.batch_size < 1:
        raise ValueError(f"--batch-size {args.batch_size!r}: expected an int >= 1")

    t0 = time.perf_counter()
    model_path = resolve_model(args.model)
    splits = [s for s in (args.split or "").split(",") if s.strip()] or None
    # user overrides may change env options that decide the task list (WebShop goals): read them first
    probe = compose([*(args.override or [])])
    env_kwargs = OmegaConf.select(probe, "himac.env_kwargs", default=None)
    env_kwargs = OmegaConf.to_container(env_kwargs, resolve=True) if env_kwargs is not None else {}
    with console.status("building evaluation datasets"):
        plan = plan_eval(args.env, splits, args.method, args.model, model_path, args.seed, args.limit,
                         out / "data", env_kwargs=env_kwargs)
    overrides = trainer_overrides(plan, out, args.gpu, min(args.batch_size, len(plan.tasks)))
    overrides += list(args.override or [])
    config = compose(overrides)
    (out / "run.json").write_text(json.dumps(
        {"plan": asdict(plan), "overrides": overrides, "command": vars(args)}, indent=1, default=str))
    console.print(f"[bold]eval run[/bold]: {plan.env} {list(plan.splits)}, method {plan.method}, model "
                  f"{plan.model} ({plan.model_path}), {len(plan.tasks)} tasks, seed {plan.seed}, "
                  f"{'GPU' if args.gpu else 'CPU mode'}; verl validation only (trainer.val_only=true)")
    with _LogProgress(log, len(plan.tasks), console):
        run_trainer(config)

    run_info = RunInfo(plan.method, plan.model, plan.seed)
    records = read_episodes(log) if log.exists() else []
    logged = {r.task_uid for r in records}
    unexpected = sorted(logged - {t.task_uid for t in plan.tasks})
    if unexpected:
        raise EpisodeLogError(f"{log}: episodes of tasks that were not planned: {unexpected[:5]}")
    missing = [t for t in plan.tasks if t.task_uid not in logged]
    if missing:
        console.print(f"[yellow]{len(missing)} of {len(plan.tasks)} tasks produced no episode (env reset failed "
                      f"twice, or the call raised; see the Ray logs); they are logged as failures flagged "
                      f"{NO_EPISODE_FLAG!r}: {[t.task_uid for t in missing[:5]]}[/yellow]")
        write_episodes(log, [missing_task_record(t.task_uid, t.task_type, run_info) for t in missing], mode="a")
    console.print(f"{len(plan.tasks)} episodes in {log} ({time.perf_counter() - t0:.0f} s)")
    return report.make_report([log], out, model=args.published_model, published_tables=args.published,
                              paper_results=args.paper_results, confidence=args.confidence, console=console)
