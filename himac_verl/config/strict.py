"""Strict reading of the ``himac`` section: every key known and every value of its declared type, checked
before Ray starts, every problem reported at once (``strict_problems``; ``trainer/validate.py`` runs it).

Where the known keys and their types come from (stated where they are defined; the only types written
here are those of the few keys whose packaged default is null, :data:`NULL_DEFAULT_TYPES`):

- sections read into a dataclass: that dataclass's fields and annotations: ``himac.schedule``
  (``CoEvolutionSchedule``), ``himac.update_budget`` (``UpdateBudget``), ``himac.advantage``
  (``AdvantageConfig``) and ``himac.agent`` (the keys the packaged yaml lists there, typed by
  ``LoopSettings``);
- every other key: the packaged ``himac_trainer.yaml`` lists it; a non-null default there gives its type,
  and the keys whose default is null take theirs from :data:`NULL_DEFAULT_TYPES`;
- the open mappings: ``himac.env_kwargs`` by the env class (``AgentEnv.check_options``), ``himac.pool`` by
  ``EnvPool.check_settings``.

Rules: ``null`` keeps the default; a bool must be a bool (``fasle`` is not false), an int an int (not 2.5,
not true), a float any finite number (not nan or inf), a str a str. Ranges and choices stay with the
classes that own them (their own checks run afterwards on the sections found well typed here).
"""

from __future__ import annotations

import difflib
import math
import typing
from dataclasses import dataclass, fields
from functools import lru_cache
from importlib import resources
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf


@dataclass(frozen=True)
class Problem:
    """One rejected setting: the key, the value found, and why it cannot run."""

    key: str
    value: Any
    reason: str

    def __str__(self) -> str:
        return f"{self.key}={self.value!r}: {self.reason}"


# Keys whose packaged default is null (= "the owner's default"): their type, range checked where noted.
NULL_DEFAULT_TYPES: dict[str, type] = {
    "phase": str,
    "metrics_file": str,
    "eval_log_file": str,
    "val_levels_between": int,
    "replay_poll_interval_s": float,
    "data.train_size": int,
    "data.val_size": int,
    "data.val_splits": list,
    "eval_run.method": str,
    "eval_run.model": str,
    "eval_run.seed": int,
}
# Keys that existed once: what replaced them (a clearer message than "unknown key").
RETIRED_KEYS: dict[str, str] = {
    "optim_steps_per_update": "was replaced by himac.update_budget.mini_batch_turns / macro_mini_batch_turns "
                              "(optimizer steps sized in turn samples)",
}
POSITIVE = ("val_levels_between", "replay_poll_interval_s", "data.train_size", "data.val_size")
OPEN_MAPPINGS = ("env_kwargs", "pool")


@lru_cache(maxsize=1)
def packaged_himac() -> dict[str, Any]:
    """The ``himac`` section of the packaged ``himac_trainer.yaml``, unresolved (interpolations kept)."""
    text = resources.files("himac_verl.config").joinpath("himac_trainer.yaml").read_text(encoding="utf-8")
    return OmegaConf.to_container(OmegaConf.create(text), resolve=False)["himac"]


def _dataclass_sections() -> dict[str, tuple[type, tuple[str, ...] | None]]:
    """Section -> (dataclass giving the types, the known keys; None: all its fields)."""
    from himac_verl.advantage.config import AdvantageConfig
    from himac_verl.agent.config import LoopSettings
    from himac_verl.trainer.coevolution import CoEvolutionSchedule
    from himac_verl.trainer.roles import UpdateBudget

    agent_keys = tuple(packaged_himac()["agent"])
    return {"schedule": (CoEvolutionSchedule, None), "update_budget": (UpdateBudget, None),
            "advantage": (AdvantageConfig, None), "agent": (LoopSettings, agent_keys)}


def _annotation_types(cls: type) -> dict[str, tuple[type, ...] | None]:
    """Field -> the plain types its annotation allows (None: a container or other type, not checked here)."""
    hints = typing.get_type_hints(cls)
    out: dict[str, tuple[type, ...] | None] = {}
    for f in fields(cls):
        args = typing.get_args(hints[f.name]) or (hints[f.name],)
        plain = tuple(a for a in args if a is not type(None))
        out[f.name] = plain if all(a in (bool, int, float, str) for a in plain) else None
    return out


def _type_error(value: Any, allowed: tuple[type, ...]) -> str | None:
    """Why ``value`` is not of one of ``allowed`` (bool, int, float, str, list, dict), or None."""
    if value is None:
        return None
    if isinstance(value, ListConfig):
        value = list(value)
    if isinstance(value, DictConfig):
        value = {}
    for kind in allowed:
        if kind is bool and isinstance(value, bool):
            return None
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return None
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return None if math.isfinite(value) else "must be a finite number"
        if kind in (str, list, dict) and isinstance(value, kind):
            return None
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list",
             dict: "a mapping"}
    return "must be " + " or ".join(names[k] for k in allowed) + f", got {type(value).__name__}"


def _unknown(key: str, known: list[str]) -> str:
    leaf = key.rsplit(".", 1)[-1]
    near = difflib.get_close_matches(leaf, known, n=1)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    return f"unknown key{hint} (known: {', '.join(sorted(known))})"


def to_plain(value: Any) -> Any:
    """A DictConfig / ListConfig as plain Python containers (resolved); anything else as it is."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def strict_problems(config: Any) -> list[Problem]:
    """Every unknown ``himac.*`` key and every value of the wrong type or non-finite, as Problems."""
    himac = OmegaConf.select(config, "himac", default=None)
    if himac is None:
        return []
    packaged = packaged_himac()
    sections = _dataclass_sections()
    problems: list[Problem] = []

    def check(key: str, value: Any, allowed: tuple[type, ...] | None) -> None:
        if allowed is None:
            return
        reason = _type_error(value, allowed)
        if reason:
            problems.append(Problem(f"himac.{key}", to_plain(value), reason))
        elif key in POSITIVE and value is not None and not value > 0:
            problems.append(Problem(f"himac.{key}", value, "must be > 0"))

    for name in himac:
        value = himac[name]
        if name not in packaged:
            reason = RETIRED_KEYS.get(name) or _unknown(name, list(packaged))
            problems.append(Problem(f"himac.{name}", to_plain(value), reason))
        elif name in OPEN_MAPPINGS:
            if value is not None and not isinstance(value, DictConfig):
                problems.append(Problem(f"himac.{name}", to_plain(value), "must be a mapping"))
        elif name in sections or isinstance(packaged[name], dict):
            if value is None:
                continue
            if not isinstance(value, DictConfig):
                problems.append(Problem(f"himac.{name}", to_plain(value), "must be a mapping"))
                continue
            cls, keys = sections.get(name, (None, None))
            types = _annotation_types(cls) if cls is not None else {}
            known = list(keys if keys is not None else (types if cls is not None else packaged[name]))
            for sub in value:
                key = f"{name}.{sub}"
                if sub not in known:
                    problems.append(Problem(f"himac.{key}", to_plain(value[sub]), _unknown(key, known)))
                elif cls is not None:
                    check(key, value[sub], types.get(sub))
                else:
                    default = packaged[name][sub]
                    check(key, value[sub], (NULL_DEFAULT_TYPES[key],) if default is None else (type(default),))
        else:
            default = packaged[name]
            allowed = (NULL_DEFAULT_TYPES[name],) if default is None else (type(default),)
            if isinstance(default, str) and "${" in default:  # an interpolation: any string
                allowed = (str,)
            check(name, value, allowed)
    problems += _open_mapping_problems(himac)
    return problems


def _open_mapping_problems(himac: Any) -> list[Problem]:
    """``himac.env_kwargs`` checked by the env class, ``himac.pool`` by the env pool (nothing starts)."""
    from himac_verl.envs import ENV_CLASSES, env_class
    from himac_verl.envs.pool import EnvPool

    problems: list[Problem] = []
    pool = himac.get("pool")
    if isinstance(pool, DictConfig):
        try:
            EnvPool.check_settings(**to_plain(pool))
        except (TypeError, ValueError) as err:
            problems.append(Problem("himac.pool", to_plain(pool), str(err)))
    env, env_kwargs = himac.get("env"), himac.get("env_kwargs")
    if isinstance(env_kwargs, DictConfig) and isinstance(env, str) and (env in ENV_CLASSES or ":" in env):
        try:
            env_class(env).check_options(to_plain(env_kwargs))
        except (ImportError, AttributeError) as err:
            problems.append(Problem("himac.env", env, f"cannot load the env class: {err}"))
        except (TypeError, ValueError) as err:
            problems.append(Problem("himac.env_kwargs", to_plain(env_kwargs), str(err)))
    return problems
