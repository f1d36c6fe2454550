"""HiMAC's additions to verl's sync trainer step: phases, role-aware advantages, optimizer-step count.

:class:`HierarchicalSteps` is mixed into our one trainer class (``HimacTrainer``) ahead of verl's
``PPOTrainerSync``. It is active when ``algorithm.adv_estimator`` is one of our estimators (``himac``,
``episode_grpo``, ``gigpo``); with verl's own estimators (the built-in arithmetic GRPO task) every method
defers to verl. verl's step (trainer_base.py ``_step_once``) is kept; we override its stages:

1. ``_next_train_batch``: the step's phase (``CoEvolutionSchedule``) goes into the batch as the
   ``himac_phase`` column, which verl hands to every agent-loop call as a keyword;
2. ``_balance_batch``: before verl pads and balances, the samples the phase does not train are dropped
   from the batch and cleared from TransferQueue (so a frozen role costs no log-prob compute and gets no
   KL/entropy gradient either), and the per-role metrics of all samples are recorded;
   Samples of FAILED episodes (env crash/hang, failed generate: contract field ``failed``) stay in the
   batch so the estimators see which groups lost episodes, but their ``response_mask`` and ``loss_mask``
   are zeroed in TransferQueue, so they add no policy-gradient, KL or entropy term and no token to the
   loss's divisor (they never train);
3. ``_get_required_batch_multiple`` and ``_update_actor``: one update takes ceil(trainable turn samples /
   mini-batch) optimizer steps per epoch, the mini-batch sized in turn samples by ``himac.update_budget``
   (``UpdateBudget``: ``mini_batch_turns``, and ``macro_mini_batch_turns`` for phase A), like verl-agent's
   ``ppo_mini_batch_size``;
4. ``_compute_advantage``: advantages from the samples' ``extra_fields`` with our estimators (verl's
   plain dispatch sees only ``uid``, which cannot express macro/micro groups);
5. ``_save_checkpoint`` / ``_load_checkpoint``: the schedule's settings are saved beside verl's
   checkpoint and checked on resume (the phase is a function of the step, so the schedule then
   continues exactly).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from typing import Any

import numpy as np
import torch
import transfer_queue as tq
from omegaconf import OmegaConf, open_dict
from tensordict import TensorDict
from verl.utils import tensordict_utils as tu
from verl.workers.utils.padding import response_to_nested

from himac_verl.advantage import ESTIMATORS, AdvantageConfig, SampleFields, compute_advantage
from himac_verl.agent.config import PHASE_COLUMN
from himac_verl.core.contract import PHASE_CODES  # numeric phase for TensorBoard curves
from himac_verl.trainer.coevolution import CoEvolutionSchedule
from himac_verl.trainer.roles import (
    UpdateBudget,
    advantage_metrics,
    failed_mask,
    mini_batch_rows,
    phase_keep_mask,
    role_metrics,
)

logger = logging.getLogger(__name__)

SCHEDULE_FILE = "himac_schedule.json"


class HierarchicalSteps:
    """Mixin for verl's ``PPOTrainerSync`` (see the module docstring)."""

    def __init__(self, config):
        super().__init__(config)
        himac = OmegaConf.select(config, "himac", default=None) or {}
        # HiMAC or the flat baselines (episode_grpo, gigpo): our advantage step and sample accounting apply;
        # verl's own estimators (the arithmetic task) keep verl's stages untouched
        self.uses_our_estimators = config.algorithm.adv_estimator in ESTIMATORS
        self.schedule = CoEvolutionSchedule.from_config(himac.get("schedule") or {})
        if self.uses_our_estimators and (config.algorithm.adv_estimator == "himac") == (self.schedule.mode == "flat"):
            raise ValueError(
                f"algorithm.adv_estimator={config.algorithm.adv_estimator!r} does not fit "
                f"himac.schedule.mode={self.schedule.mode!r}: himac goes with coevolve/joint/macro/micro, "
                "episode_grpo and gigpo with flat"
            )
        update = himac.get("update_budget")
        self.update_budget = UpdateBudget.from_config(
            OmegaConf.to_container(update, resolve=True) if update is not None else None)
        self.optim_steps = 1  # of the current update; set by the phase filter from the budget
        self.advantage_config = AdvantageConfig.from_config(
            OmegaConf.to_container(himac.get("advantage"), resolve=True) if himac.get("advantage") else None
        )
        self._step_started: float | None = None

    # ------------------------------------------------------------------ phase
    def current_phase(self) -> str:
        """This training step's phase: macro | micro | joint | flat."""
        return self.schedule.phase(max(1, self.global_steps))

    def _next_train_batch(self, num_prompts: int | None = None):
        batch = super()._next_train_batch(num_prompts)
        if self.uses_our_estimators:
            tu.assign_non_tensor_data(batch, PHASE_COLUMN, self.current_phase())
        return batch

    def step(self, metrics: dict, timing_raw: dict):
        started = time.perf_counter()
        batch = super().step(metrics, timing_raw)
        if self.uses_our_estimators:
            phase = self.current_phase()
            metrics[f"himac/time/{phase}_step_s"] = time.perf_counter() - started
            metrics["himac/phase"] = PHASE_CODES[phase]
        return batch

    # ------------------------------------------------------------------ phase filter
    def _balance_batch(self, batch, metrics, logging_prefix="global_seqlen", keep_minibatch=False):
        if self.uses_our_estimators:
            batch = self._keep_phase_samples(batch, metrics)
        return super()._balance_batch(batch, metrics, logging_prefix=logging_prefix, keep_minibatch=keep_minibatch)

    def _keep_phase_samples(self, batch, metrics: dict):
        """Drop (and clear from TransferQueue) the samples this step's phase does not train."""
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id,
                               select_fields=["extra_fields", "response_mask"])
        extra = _extra_fields(data)
        lengths = [int(row.sum()) for row in data["response_mask"].unbind()]
        metrics.update(role_metrics(extra, lengths))
        phase = self.current_phase()
        keep = phase_keep_mask(extra, phase)
        failed = failed_mask(extra) & keep
        self._update_skipped = not (keep & ~failed).any()
        metrics["himac/update_skipped"] = int(self._update_skipped)
        metrics["himac/samples/failed"] = int(failed_mask(extra).sum())
        self.optim_steps = 1
        if self._update_skipped:
            # e.g. phase B when no blueprint of any task parsed, so no micro pass ran: nothing this phase
            # trains. verl's step cannot be skipped midway, so the batch goes on with zero advantages
            # (no policy gradient; AdamW's weight decay still applies) and the metric says so.
            logger.warning("step %d: phase %r has no trainable sample among %d samples (roles %s); "
                           "this update uses zero advantages", self.global_steps, phase, len(extra),
                           sorted({f["role"] for f in extra}))
            metrics["himac/samples/dropped_by_phase"] = 0
            return batch
        dropped = [key for key, k in zip(batch.keys, keep) if not k]
        if dropped:
            tq.kv_clear(keys=dropped, partition_id=batch.partition_id)
        metrics["himac/samples/dropped_by_phase"] = len(dropped)
        if failed.any():
            rows = [row for row, f in zip(data["response_mask"].unbind(), failed) if f]
            tq.kv_batch_put(keys=[key for key, f in zip(batch.keys, failed) if f], partition_id=batch.partition_id,
                            fields=zeroed_masks(rows))
        self.optim_steps = self.update_budget.optim_steps(phase, int(keep.sum() - failed.sum()))
        return batch.select_keys([key for key, k in zip(batch.keys, keep) if k])

    # ------------------------------------------------------------------ optimizer steps per update
    def _get_required_batch_multiple(self, dp_size: int) -> int:
        """Rows must split into ``optim_steps`` equal mini-batches over ``dp_size`` ranks, and every rank's
        share of a log-prob pass (rollout and ref) and of a mini-batch must divide into verl's micro-batches
        (without dynamic batch sizes verl asserts it)."""
        if not self.uses_our_estimators:
            return super()._get_required_batch_multiple(dp_size)
        ref = self.config.actor_rollout_ref

        def micro(value) -> int:
            return int(value) if value else 1

        return math.lcm(
            dp_size * self.optim_steps * micro(ref.actor.get("ppo_micro_batch_size_per_gpu")),
            dp_size * micro(ref.rollout.get("log_prob_micro_batch_size_per_gpu")),
            dp_size * micro(ref.ref.get("log_prob_micro_batch_size_per_gpu")),
        )

    def _update_actor(self, batch, metrics: dict):
        if not self.uses_our_estimators:
            return super()._update_actor(batch, metrics)
        self._reset_optimizer_at_phase_switch(metrics)
        dp_size = self._actor_dp_size()
        rows = mini_batch_rows(len(batch), self.optim_steps, dp_size)
        actor = self.config.actor_rollout_ref.actor
        n = int(self.config.actor_rollout_ref.rollout.n)
        saved = actor.ppo_mini_batch_size
        # verl sizes the update's mini-batches from this key (trainer_base.py _update_actor); set it for
        # this call only so the update makes exactly optim_steps steps per epoch.
        with open_dict(actor):
            actor.ppo_mini_batch_size = rows // n
        try:
            batch = super()._update_actor(batch, metrics)
        finally:
            with open_dict(actor):
                actor.ppo_mini_batch_size = saved
        metrics["himac/optim_steps"] = (len(batch) // rows) * int(actor.ppo_epochs)
        metrics["himac/mini_batch_turns"] = self.update_budget.mini_batch(self.current_phase())
        metrics["himac/mini_batch_rows"] = rows
        return batch

    def _reset_optimizer_at_phase_switch(self, metrics: dict) -> None:
        """With ``himac.update_budget.reset_optimizer_on_phase_switch``, the first update of a phase starts from a
        fresh Adam state (the previous phase's moments would otherwise steer it for ~10 steps)."""
        if not self.update_budget.reset_optimizer_on_phase_switch or self.global_steps <= 1:
            return
        if self.schedule.phase(self.global_steps) == self.schedule.phase(self.global_steps - 1):
            return
        zeroed = self.actor_rollout_wg.reset_optimizer_state()
        metrics["himac/optimizer_reset"] = 1
        metrics["himac/optimizer_state_tensors_zeroed"] = int(sum(zeroed) if isinstance(zeroed, list) else zeroed)

    def _actor_dp_size(self) -> int:
        wg = self.actor_rollout_wg
        if "actor" not in wg._dispatch_info:
            wg._dispatch_info["actor"] = wg._query_dispatch_info("actor")
        return max(wg._dispatch_info["actor"]) + 1

    # ------------------------------------------------------------------ advantages
    def _compute_advantage(self, batch, metrics: dict):
        if not self.uses_our_estimators:
            return super()._compute_advantage(batch, metrics)
        if self.config.algorithm.use_kl_in_reward:
            raise ValueError("algorithm.use_kl_in_reward=True is not supported with our estimators; "
                             "use the KL loss (actor_rollout_ref.actor.use_kl_loss=True)")
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id,
                               select_fields=["extra_fields", "response_mask"])
        extra = _extra_fields(data)
        nested_mask = data["response_mask"]
        mask = TensorDict({"response_mask": nested_mask}, batch_size=len(batch)).to_padded_tensor()["response_mask"]
        is_padding = np.array([bool(tag.get("is_padding", False)) for tag in batch.tags])
        fields = SampleFields.from_extra_fields(extra, is_padding=is_padding)
        advantages, returns = compute_advantage(self.config.algorithm.adv_estimator, fields, mask,
                                                self.advantage_config)
        if getattr(self, "_update_skipped", False):
            advantages, returns = torch.zeros_like(advantages), torch.zeros_like(returns)
        counts = mask.sum(dim=1).clamp(min=1)
        per_sample = ((advantages * mask).sum(dim=1) / counts).tolist()
        metrics.update(advantage_metrics(extra, per_sample, ~is_padding))
        output = TensorDict(
            {"advantages": response_to_nested(advantages, nested_mask),
             "returns": response_to_nested(returns, nested_mask)},
            batch_size=len(batch),
        )
        return tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=output)

    # ------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self):
        super()._save_checkpoint()
        folder = os.path.join(self.config.trainer.default_local_dir, f"global_step_{self.global_steps}")
        if os.path.isdir(folder):
            state = {"schedule": self.schedule.state_dict(), "global_steps": int(self.global_steps),
                     "phase": self.current_phase()}
            with open(os.path.join(folder, SCHEDULE_FILE), "w") as f:
                json.dump(state, f)

    def _load_checkpoint(self):
        super()._load_checkpoint()
        if self.global_steps <= 0:
            return
        trainer_cfg = self.config.trainer
        if trainer_cfg.resume_mode == "resume_path":
            folder = trainer_cfg.resume_from_path
        else:
            folder = os.path.join(trainer_cfg.default_local_dir, f"global_step_{self.global_steps}")
        path = os.path.join(os.path.abspath(folder), SCHEDULE_FILE)
        if not os.path.exists(path):
            logger.warning("checkpoint %s has no %s: cannot check the co-evolution schedule", folder, SCHEDULE_FILE)
            return
        with open(path) as f:
            saved = json.load(f)
        self.schedule.check_resume(saved["schedule"])
        self.resumed_schedule: dict[str, Any] = saved
        logger.info("resumed at step %d (phase %s); next step %d is phase %s", saved["global_steps"],
                    saved["phase"], self.global_steps + 1, self.schedule.phase(self.global_steps + 1))


def zeroed_masks(response_masks: list[torch.Tensor]) -> TensorDict:
    """``response_mask`` and ``loss_mask`` of all zeros for the given rows (nested, as TransferQueue stores
    them): such a row adds nothing to the loss nor to its token-mean divisor, like verl's padding rows."""
    zeros = [torch.zeros_like(row) for row in response_masks]
    return TensorDict({"response_mask": torch.nested.as_nested_tensor(zeros, layout=torch.jagged),
                       "loss_mask": torch.nested.as_nested_tensor([z.clone() for z in zeros], layout=torch.jagged)},
                      batch_size=len(zeros))


def _extra_fields(data) -> list[dict]:
    """The per-sample ``extra_fields`` dicts of a TransferQueue fetch (a non-tensor column)."""
    value = data["extra_fields"]
    return list(value.tolist() if hasattr(value, "tolist") else value)


__all__ = ["HierarchicalSteps", "SCHEDULE_FILE", "zeroed_masks"]
