"""Settings of the advantage estimators (one small dataclass, strict when built from a dict)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

STATS_MODES: tuple[str, ...] = ("episode", "turn")
PENALTY_MODES: tuple[str, ...] = ("episode", "turn")


@dataclass(frozen=True)
class AdvantageConfig:
    """
    norm_by_std: divide by the group's unbiased std (+ eps), as verl's GRPO does; False keeps the
        mean-centred value only (Dr.GRPO style).
    gamma: GiGPO's discount for step returns within an episode (verl-agent's default 0.95).
    step_weight: GiGPO's weight w of the step-level term, A = A_episode + w * A_step.
    eps: added to the std before dividing (verl's GRPO epsilon).
    stats: ``"turn"``: a group's mean and std are over the scores of ALL its turn samples (verl-agent's
        ``compute_mean_std_cross_all_data=True``; the advantage mass over samples sums to zero per group);
        ``"episode"``: over its UNIQUE episodes (one value per episode, broadcast to its samples).
    penalty: where the invalid-action penalty goes. ``"turn"``: on the invalid turn only (the episode's
        value is its env return without penalties; verl-agent's ``apply_invalid_action_penalty``);
        ``"episode"``: inside the episode's return, hence on every turn of the episode.

    The formulas are in docs/advantage.md.
    """

    norm_by_std: bool = True
    gamma: float = 0.95
    step_weight: float = 1.0
    eps: float = 1e-6
    stats: str = "turn"
    penalty: str = "turn"

    def __post_init__(self) -> None:
        if not isinstance(self.norm_by_std, bool):
            raise ValueError(f"advantage config: norm_by_std is {self.norm_by_std!r}, expected a bool")
        for name, choices in (("stats", STATS_MODES), ("penalty", PENALTY_MODES)):
            value = getattr(self, name)
            if not isinstance(value, str) or value not in choices:
                raise ValueError(f"advantage config: {name} is {value!r}, expected one of {', '.join(choices)}")
        for name, low, high in (("gamma", 0.0, 1.0), ("step_weight", 0.0, math.inf), ("eps", 0.0, math.inf)):
            value = getattr(self, name)
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
            if not ok or not low <= value <= high:
                bounds = f"in [{low}, {high}]" if math.isfinite(high) else f">= {low}"
                raise ValueError(f"advantage config: {name} is {value!r}, expected a finite number {bounds}")
            object.__setattr__(self, name, float(value))

    @classmethod
    def from_config(cls, config: AdvantageConfig | Mapping[str, Any] | None) -> AdvantageConfig:
        """Build from None (defaults), an AdvantageConfig, a dict or an OmegaConf DictConfig; a key set to
        None keeps its default.

        Unknown keys raise: a misspelt ``norm_by_sdt`` silently falling back to the default would
        change the training signal without a trace.
        """
        if config is None:
            return cls()
        if isinstance(config, cls):
            return config
        if not isinstance(config, Mapping):
            raise TypeError(f"advantage config is a {type(config).__name__}, expected a dict or DictConfig")
        try:  # DictConfig: resolve interpolations into plain values
            from omegaconf import DictConfig, OmegaConf

            if isinstance(config, DictConfig):
                config = OmegaConf.to_container(config, resolve=True)
        except ImportError:  # pragma: no cover - omegaconf is a verl dependency
            pass
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in config if k not in known)
        if unknown:
            raise ValueError(f"advantage config: unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(known))}")
        # null (the trainer yaml's "use the default") keeps the dataclass default, stated once here
        return cls(**{k: v for k, v in dict(config).items() if v is not None})
