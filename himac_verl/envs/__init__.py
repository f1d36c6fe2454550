"""Environments behind one interface (``base.AgentEnv``): Sokoban, ALFWorld, WebShop."""

from __future__ import annotations

import importlib

from himac_verl.envs.base import AgentEnv, Observation, ResetResult, StepResult, TaskSpec

# name -> "module:class"; imported lazily so a missing optional dependency only hurts its own env.
ENV_CLASSES: dict[str, str] = {
    "sokoban": "himac_verl.envs.sokoban:SokobanEnv",
    "alfworld": "himac_verl.envs.alfworld:AlfWorldEnv",
    "webshop": "himac_verl.envs.webshop:WebShopEnv",
    "bandit": "himac_verl.envs.bandit:BlueprintBanditEnv",  # diagnostic: outcome = the blueprint chosen
}


def env_class(name: str) -> type[AgentEnv]:
    """The env class of ``name``: a key of ``ENV_CLASSES`` or a ``"module:Class"`` path (test/user envs)."""
    if name in ENV_CLASSES:
        target = ENV_CLASSES[name]
    elif isinstance(name, str) and ":" in name:
        target = name
    else:
        raise ValueError(f"env name {name!r} is not one of {sorted(ENV_CLASSES)} nor a 'module:Class' path")
    module_name, cls_name = target.split(":")
    return getattr(importlib.import_module(module_name), cls_name)


def make_env(name: str, **kwargs) -> AgentEnv:
    """Build one environment instance by name (``kwargs`` are the env's own options)."""
    return env_class(name)(**kwargs)


__all__ = ["AgentEnv", "ENV_CLASSES", "env_class", "Observation", "ResetResult", "StepResult", "TaskSpec", "make_env"]
