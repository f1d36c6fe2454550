"""verl's workers with a gloo-only process group, so FSDP2 runs on CPU without patching torch.

verl initialises its process group with ``f"cpu:gloo,{device}:{backend}"``; on CPU that is
``"cpu:gloo,cpu:gloo"``, which torch rejects (duplicate device type). verl skips its own init when a
group already exists, so these subclasses create a plain gloo group first (same rank, world size and
rendezvous variables verl's Worker sets up) and then defer to verl unchanged.
"""

from __future__ import annotations

import os

import torch.distributed as dist
from verl.single_controller.base.decorator import Dispatch, register
from verl.workers.engine_workers import ActorRolloutRefWorker, TrainingWorker


def init_gloo_process_group() -> None:
    """Create the default process group with backend ``gloo`` if none exists (idempotent)."""
    if dist.is_initialized():
        return
    dist.init_process_group(
        backend="gloo",
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        init_method=os.environ.get("DIST_INIT_METHOD", None),
    )


class OptimizerResetMixin:
    """Adds one worker method: zero the actor optimizer's moments and step counts (a fresh Adam state),
    for ``himac.update_budget.reset_optimizer_on_phase_switch``. The workers are not rebuilt: the trainer's
    worker group calls it on every rank between two updates."""

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def reset_optimizer_state(self) -> int:
        """Zero every tensor of the actor optimizer's per-parameter state; returns how many were zeroed."""
        optimizer = self.actor.engine.optimizer
        zeroed = 0
        for state in optimizer.state.values():
            for key, value in state.items():
                if hasattr(value, "zero_"):
                    value.zero_()
                    zeroed += 1
                elif key == "step":
                    state[key] = 0
        return zeroed


class HimacActorRolloutRefWorker(OptimizerResetMixin, ActorRolloutRefWorker):
    """verl's ``ActorRolloutRefWorker`` plus :class:`OptimizerResetMixin` (GPU runs that ask for the reset)."""


class CpuActorRolloutRefWorker(OptimizerResetMixin, ActorRolloutRefWorker):
    """``ActorRolloutRefWorker`` whose ``init_model`` starts from a gloo process group."""

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def init_model(self):
        init_gloo_process_group()
        return super().init_model()


class CpuTrainingWorker(TrainingWorker):
    """``TrainingWorker`` (critic and other standalone engines) on a gloo process group."""

    def __init__(self, config):
        init_gloo_process_group()
        super().__init__(config)


# verl class -> CPU subclass; the trainer swaps them in its role/worker mapping in CPU mode.
CPU_WORKER_CLASSES: dict[type, type] = {
    ActorRolloutRefWorker: CpuActorRolloutRefWorker,
    TrainingWorker: CpuTrainingWorker,
}
