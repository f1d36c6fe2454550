"""``python -m himac_verl.main``: verl's PPO/GRPO trainer through our TaskRunner and trainer class.

    python -m himac_verl.main mode=cpu                    # CPU: SmolLM2-135M on the arithmetic task
    python -m himac_verl.main mode=cpu himac.model=tiny   # CPU: random tiny Qwen2 (seconds per step)

Order matters and is the reason this module exists: the config is composed first (ours on verl's
``ppo_trainer``), then ``himac.cpu_mode`` is exported as ``HIMAC_CPU_MODE`` *before* verl's trainer modules
are imported (one of them resolves the platform at import) and before Ray starts (its processes inherit
the variable, and get it through ``runtime_env`` too), then ``auto`` paths are filled in (model, data).
"""

from __future__ import annotations

import logging
import os

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from himac_verl import cpu

logger = logging.getLogger(__name__)

AUTO = "auto"


def resolve_model_path(choice: str) -> str:
    """``himac.model`` -> a local HF folder: ``sokoban_agent`` (the learning demo's starting model, built offline
    into the cache on first use), ``smollm2``, ``tiny`` or a path (checked)."""
    from himac_verl.paths import cache_dir

    if choice == "smollm2":
        from himac_verl.models.smollm2 import ensure_smollm2

        return ensure_smollm2()
    if choice == "sokoban_agent":
        from himac_verl.models.sokoban_agent import build_sokoban_agent, default_path

        print(f"[model] sokoban_agent: {default_path()} (built there once if missing, about 9 minutes on 2 "
              "cores, progress below)", flush=True)
        return build_sokoban_agent(default_path(), log=print)
    if choice == "tiny":
        from himac_verl.models.tiny import build_tiny_qwen2

        return build_tiny_qwen2(cache_dir() / "models" / "tiny-qwen2")
    if not os.path.isdir(os.path.expanduser(choice)):
        raise FileNotFoundError(f"himac.model={choice!r}: expected 'sokoban_agent', 'smollm2', 'tiny' or an existing model folder")
    return os.path.expanduser(choice)


def resolve_task_files(task) -> tuple[str, str]:
    """``himac.task`` -> (train, val) parquet paths of the built-in task (built once in the cache)."""
    from himac_verl.paths import cache_dir

    if task.name != "arithmetic":
        raise ValueError(f"himac.task.name={task.name!r}: the built-in task is 'arithmetic' "
                         "(or set data.train_files/data.val_files to your own parquet files)")
    from himac_verl.tasks.arithmetic import build_dataset

    return build_dataset(cache_dir() / "data", train_size=int(task.train_size), val_size=int(task.val_size),
                         seed=int(task.seed), max_operand=int(task.max_operand))


def prepare(config: DictConfig) -> DictConfig:
    """Fill in what the user did not type (in place) and switch CPU mode on if asked. Returns config."""
    cpu_mode = bool(OmegaConf.select(config, "himac.cpu_mode", default=False))
    if cpu_mode:
        cpu.enable()
    elif cpu.is_enabled():
        raise ValueError(f"{cpu.ENV_VAR} is set in the environment but himac.cpu_mode=false: "
                         "use one switch (mode=cpu or himac.cpu_mode=true)")
    with open_dict(config):
        if config.actor_rollout_ref.model.path == AUTO:
            config.actor_rollout_ref.model.path = resolve_model_path(str(config.himac.model))
        if AUTO in (config.data.train_files, config.data.val_files):
            if str(OmegaConf.select(config, "himac.env", default="arithmetic")) == "arithmetic":
                train, val = resolve_task_files(config.himac.task)
            else:  # our envs: one row per task, built once into the cache (himac_verl.tasks.env_datasets)
                from himac_verl.tasks.env_datasets import auto_files

                train, val = auto_files(config)
            if config.data.train_files == AUTO:
                config.data.train_files = train
            if config.data.val_files == AUTO:
                config.data.val_files = val
        for key in ("himac.metrics_file", "himac.tensorboard_dir", "trainer.default_local_dir"):
            value = OmegaConf.select(config, key, default=None)
            if value and not os.path.isabs(str(value)):  # Ray processes may run in another directory
                OmegaConf.update(config, key, os.path.abspath(str(value)))
        if cpu_mode:
            env = config.ray_kwargs.ray_init.setdefault("runtime_env", {})
            env_vars = env.get("env_vars") or {}
            env.env_vars = {**env_vars, **cpu.ray_env_vars()}
    return config


def run(config: DictConfig, task_runner_class=None) -> None:
    """Prepare, validate and train (Ray is started unless it already runs: tests share one)."""
    from himac_verl import plugin
    from himac_verl.trainer.validate import validate_himac_config

    validate_himac_config(config)  # every bad key named at once, before Ray starts
    prepare(config)
    plugin.assert_registered()

    from verl.trainer.main_ppo import run_ppo
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config
    from verl.utils.device import auto_set_device

    from himac_verl.trainer.task_runner import HimacTaskRunner, check_sync_mode

    check_sync_mode(config)
    auto_set_device(config)
    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    run_ppo(config, task_runner_class=task_runner_class or HimacTaskRunner)


@hydra.main(config_path="config", config_name="himac_trainer", version_base=None)
def main(config: DictConfig) -> None:
    run(config)


if __name__ == "__main__":
    main()
