"""Our TaskRunner: verl's v1 TaskRunner building our trainer class with ``trainer_mode`` kept ``sync``.

verl's ``TaskRunnerV1.run`` picks the trainer by registry name, and any name other than ``sync`` switches
verl to async replay semantics. This runner subclasses verl's (the plain class behind the
Ray actor: subclassing the actor itself raises ``ActorClassInheritanceException``) and reuses its agent-loop
manager set-up; only the choice of trainer class differs: ``himac.trainer_class`` (an import path).
"""

from __future__ import annotations

import logging
import os

import ray
from omegaconf import OmegaConf, open_dict
from verl.trainer.main_ppo import TaskRunnerV1

logger = logging.getLogger(__name__)

DEFAULT_TRAINER = "himac_verl.trainer.trainer.HimacTrainer"


def trainer_class(config):
    """The trainer class named by ``himac.trainer_class`` (default :class:`HimacTrainer`)."""
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync
    from verl.utils.import_utils import load_class_from_fqn

    fqn = OmegaConf.select(config, "himac.trainer_class", default=None) or DEFAULT_TRAINER
    cls = load_class_from_fqn(fqn, "trainer")
    if not (isinstance(cls, type) and issubclass(cls, PPOTrainerSync)):
        raise TypeError(f"himac.trainer_class={fqn!r} is not a subclass of verl's PPOTrainerSync")
    return cls


def check_sync_mode(config) -> None:
    mode = config.trainer.v1.trainer_mode
    if mode != "sync":
        raise ValueError(f"trainer.v1.trainer_mode={mode!r}: himac_verl's trainer runs verl's sync semantics; "
                         "keep it 'sync' (the trainer class is chosen with himac.trainer_class)")


class HimacTaskRunnerImpl(TaskRunnerV1.__ray_actor_class__):
    def run(self, config):
        from verl.utils.logging_utils import configure_verl_logging

        from himac_verl import cpu, plugin

        configure_verl_logging()
        plugin.assert_registered()  # this Ray process loaded every registration
        if OmegaConf.select(config, "himac.cpu_mode", default=False) and not cpu.is_enabled():
            raise RuntimeError(f"himac.cpu_mode is true but {cpu.ENV_VAR} is not set in the TaskRunner process; "
                               "start runs through himac_verl.main (it exports it before Ray starts)")
        check_sync_mode(config)
        tb_dir = OmegaConf.select(config, "himac.tensorboard_dir", default=None)
        if tb_dir and "TENSORBOARD_DIR" not in os.environ:
            os.environ["TENSORBOARD_DIR"] = str(tb_dir)

        import transfer_queue as tq

        with open_dict(config):
            config.transfer_queue.enable = True
        OmegaConf.resolve(config)
        self.config = config
        cls = trainer_class(config)
        tq.init(config.transfer_queue)
        succeeded = False
        try:
            self.trainer = cls(config=config)
            self.trainer.init()
            self.init_agent_loop_manager()
            self.trainer.fit(self.agent_loop_manager)
            succeeded = True
        finally:
            try:
                tracking = getattr(self.trainer, "logger", None)
                if tracking is not None:
                    tracking.finish(exit_code=0 if succeeded else 1)
            finally:
                tq.close()
                self.release_placement_groups()

    def release_placement_groups(self) -> None:
        """Remove the trainer's placement groups. Ray scopes them to the *driver*, not to this actor, so
        a second run in the same Ray session (tests, sweeps) would otherwise collide on their names."""
        manager = getattr(self.trainer, "resource_pool_manager", None)
        for pool in (getattr(manager, "resource_pool_dict", None) or {}).values():
            for pg in getattr(pool, "pgs", None) or []:
                try:
                    ray.util.remove_placement_group(pg)
                except Exception:  # noqa: BLE001 - best effort at shutdown
                    logger.warning("could not remove placement group %s", pg.id, exc_info=True)


HimacTaskRunner = ray.remote(num_cpus=1)(HimacTaskRunnerImpl)
