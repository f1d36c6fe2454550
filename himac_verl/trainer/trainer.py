"""``HimacTrainer``: verl's sync v1 trainer plus our hooks (CPU workers, metric sinks, run facts).

It subclasses ``PPOTrainerSync`` and is built by our TaskRunner with ``trainer.v1.trainer_mode`` left at
``sync`` (registering a new trainer name would switch verl to async replay semantics). Later trainers
(HiMAC phases, role-aware advantages) subclass this one; the extension points are small methods:

- :meth:`worker_class_for` - which worker class serves a role (CPU mode swaps in gloo-first workers);
- :meth:`on_metrics` - called with each step's complete metrics dict (default: append to a JSONL file
  when ``himac.metrics_file`` is set);
- :meth:`run_facts` - what the run is made of (trainer, replay buffer, workers, platform), written once
  as the JSONL's first line so tests and reports can check it;
- :meth:`_validate` - with ``himac.eval_log_file`` set, every validation episode is also appended to that
  episode log (``himac_verl.eval.episodes``; ``python -m himac_verl.eval run`` uses it).
verl's own hooks (``on_step_begin``/``on_step_end``/``on_sample_end``...) stay available as in verl.
"""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Any

import numpy as np
import ray
from omegaconf import OmegaConf
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

from himac_verl import cpu
from himac_verl.trainer.hierarchy import HierarchicalSteps
from himac_verl.trainer.progress import progress_line, write_summary

logger = logging.getLogger(__name__)


def _plain(value: Any) -> Any:
    """JSON-safe scalar (numpy/torch scalars -> float/int; NaN/inf kept as strings)."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (int, str, bool)) or value is None:
        return value
    return str(value)


class HimacTrainer(HierarchicalSteps, PPOTrainerSync):
    """verl's sync trainer with HiMAC's step (phases, role-aware advantages; ``HierarchicalSteps``), the CPU
    worker wired in, and our metric/run-fact hooks."""

    def __init__(self, config):
        super().__init__(config)
        self.metrics_file: str | None = OmegaConf.select(config, "himac.metrics_file", default=None)
        poll = OmegaConf.select(config, "himac.replay_poll_interval_s", default=None)
        if poll is not None:
            if float(poll) <= 0:
                raise ValueError(f"himac.replay_poll_interval_s={poll}: must be > 0 seconds")
            # verl's buffer polls TransferQueue every 2 s (not configurable in 0.9.1); on CPU with small
            # models that idle wait dominates a step
            self.replay_buffer.poll_interval = float(poll)
        self._failed_groups = 0

    # ------------------------------------------------------------------ worker mapping
    def worker_class_for(self, role, cls):
        """The Ray actor class serving ``role``; ``cls`` is verl's choice (a ``ray.remote`` class).
        In CPU mode verl's workers are replaced by subclasses that create a gloo process group first."""
        from himac_verl.cpu.worker import CPU_WORKER_CLASSES, ActorRolloutRefWorker, HimacActorRolloutRefWorker

        if not cpu.is_enabled():
            base = getattr(cls, "__ray_actor_class__", cls)
            if base is ActorRolloutRefWorker and self.update_budget.reset_optimizer_on_phase_switch:
                return ray.remote(HimacActorRolloutRefWorker)  # same worker plus the optimizer-reset method
            return cls

        base = getattr(cls, "__ray_actor_class__", cls)
        replacement = CPU_WORKER_CLASSES.get(base)
        return ray.remote(replacement) if replacement is not None else cls

    def _init_resource_pool_mgr(self):
        super()._init_resource_pool_mgr()
        self.role_worker_mapping = {
            role: self.worker_class_for(role, cls) for role, cls in self.role_worker_mapping.items()
        }

    # ------------------------------------------------------------------ run facts and metrics
    def run_facts(self) -> dict[str, Any]:
        from verl.utils.device import get_device_name

        def name(obj) -> str:
            obj = getattr(obj, "__ray_actor_class__", obj)
            obj = obj if isinstance(obj, type) else type(obj)
            return f"{obj.__module__}.{obj.__qualname__}"

        return {
            "trainer": name(self),
            "trainer_mode": self.trainer_mode,
            "replay_buffer": name(self.replay_buffer),
            "replay_poll_interval_s": self.replay_buffer.poll_interval,
            "workers": {str(role): name(cls) for role, cls in self.role_worker_mapping.items()},
            "cpu_mode": cpu.is_enabled(),
            "device": get_device_name(),
            "rollout": self.config.actor_rollout_ref.rollout.name,
            "adv_estimator": self.config.algorithm.adv_estimator,
            "total_training_steps": self.total_training_steps,
            "resumed_from_step": self.global_steps,
        }

    def init(self):
        super().init()
        if self.metrics_file:
            os.makedirs(os.path.dirname(os.path.abspath(self.metrics_file)), exist_ok=True)
            with open(self.metrics_file, "a") as f:
                f.write(json.dumps({"run_facts": self.run_facts()}) + "\n")

    def on_sample_end(self):
        super().on_sample_end()
        # groups whose sessions raised are trained on with missing samples (verl's replay buffer keeps
        # their keys under failure_keys and goes on with the rest): count them
        self._failed_groups = len(self.replay_buffer.failure_keys.get("train", ()))

    def _compute_metrics(self, batch, metrics, timing_raw, global_steps, epoch):
        super()._compute_metrics(batch, metrics, timing_raw, global_steps, epoch)
        metrics["himac/failed_groups"] = self._failed_groups
        self.on_metrics(metrics, global_steps)

    def on_metrics(self, metrics: dict[str, Any], global_steps: int) -> None:
        """Receives each training step's complete metrics (before verl logs them): prints our one-line
        progress and appends them to ``himac.metrics_file`` (with the phase's name)."""
        print(progress_line(int(global_steps), int(self.total_training_steps), metrics), flush=True)
        if not self.metrics_file:
            return
        record = {"step": int(global_steps), **{k: _plain(v) for k, v in metrics.items()}}
        if self.uses_our_estimators:
            record["phase"] = self.current_phase()
        with open(self.metrics_file, "a") as f:
            f.write(json.dumps(record) + "\n")

    def _learning_report(self) -> None:
        """With a validation episode log holding two validations or more: held-out success before -> after
        on the same levels (Wilson intervals, McNemar's exact test) and ``learning.png``, beside the log."""
        from himac_verl.eval.learning import write_learning_report

        log = OmegaConf.select(self.config, "himac.eval_log_file", default=None)
        if not log or not os.path.exists(log):
            return
        try:
            report = write_learning_report(log, self.metrics_file, os.path.dirname(os.path.abspath(log)),
                                           title=self.config.trainer.experiment_name)
        except ValueError as err:  # e.g. a single validation
            print(f"[himac] no learning report: {err}", flush=True)
            return
        print(f"[himac] {report['paired']['line']}", flush=True)
        print(f"[himac] wrote {report['png']}", flush=True)

    # ------------------------------------------------------------------ evaluation episode log
    def _validate(self):
        """verl's validation, plus one episode-log record per validation episode when
        ``himac.eval_log_file`` is set. verl's ``_validate`` reads only each call's last sample and clears
        the batch from TransferQueue afterwards, so the hook reads every sample of a validation batch
        right after the replay buffer hands it over (before verl's reading and clearing)."""
        from himac_verl.eval.episodes import ValidationEpisodeLog

        episode_log = ValidationEpisodeLog.from_config(self.config, self.tokenizer)
        if episode_log is None:
            return self._validate_levels()
        episode_log.step = int(self.global_steps)
        buffer = self.replay_buffer
        sample = buffer.sample

        def sample_and_log(global_steps, partition_id, batch_size):
            batch, aux = sample(global_steps=global_steps, partition_id=partition_id, batch_size=batch_size)
            if partition_id == "val":
                episode_log.log_batch(batch)
            return batch, aux

        buffer.sample = sample_and_log
        try:
            return self._validate_levels()
        finally:
            del buffer.sample  # the instance attribute shadowed the class method

    def _validate_levels(self):
        """verl's validation on the whole val set before training and at the last step, and on its first
        ``himac.val_levels_between`` rows at the validations in between (cheaper intermediate curve points;
        the before/after comparison stays on the same full set)."""
        between = OmegaConf.select(self.config, "himac.val_levels_between", default=None)
        first_or_last = self.global_steps <= 0 or self.global_steps >= self.total_training_steps
        if between is None or first_or_last or int(between) >= len(self.val_dataset):
            return super()._validate()
        from torch.utils.data import Subset
        from torchdata.stateful_dataloader import StatefulDataLoader

        full = self.val_dataloader
        subset = Subset(self.val_dataset, range(int(between)))
        self.val_dataloader = StatefulDataLoader(dataset=subset, batch_size=len(subset), num_workers=0,
                                                 shuffle=False, drop_last=False, collate_fn=full.collate_fn)
        try:
            return super()._validate()
        finally:
            self.val_dataloader = full

    def fit(self, agent_loop_manager):
        super().fit(agent_loop_manager)
        self._learning_report()
        if self.metrics_file and os.path.exists(self.metrics_file):
            try:
                summary = write_summary(self.metrics_file)
            except ValueError as err:  # e.g. trainer.val_only: no training step was logged
                print(f"[himac] no run summary: {err}", flush=True)
                return
            print(f"[himac] run summary: steps {summary['steps'][0]}-{summary['steps'][1]}, phases "
                  f"{','.join(summary['phases_run']) or '-'}, {summary['seconds_total']} s "
                  f"({summary['seconds_per_step']} s/step), failed groups {summary['failed_groups']}", flush=True)
            print(f"[himac] last step: {json.dumps(summary['last'])}", flush=True)
            print(f"[himac] wrote {os.path.dirname(os.path.abspath(self.metrics_file))}/summary.json and "
                  f"{summary.get('curves_png', '(no curves)')}", flush=True)
