"""The single entry our trainer calls: ``compute_advantage(name, fields, response_mask, config)``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from himac_verl.advantage.config import AdvantageConfig
from himac_verl.advantage.estimators import (
    compute_episode_grpo_advantage,
    compute_gigpo_advantage,
    compute_himac_advantage,
)
from himac_verl.advantage.fields import SampleFields

Estimator = Callable[[SampleFields, torch.Tensor, AdvantageConfig], tuple[torch.Tensor, torch.Tensor]]

ESTIMATORS: dict[str, Estimator] = {
    "himac": compute_himac_advantage,
    "episode_grpo": compute_episode_grpo_advantage,
    "gigpo": compute_gigpo_advantage,
}


def compute_advantage(
    name: str,
    fields: SampleFields | Sequence[Mapping[str, Any]],
    response_mask: torch.Tensor,
    config: AdvantageConfig | Mapping[str, Any] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run estimator ``name`` on a batch.

    Args:
        name: ``himac``, ``episode_grpo`` or ``gigpo``.
        fields: a :class:`SampleFields`, or the samples' ``extra_fields`` dicts (then no padding rows).
        response_mask: [B, T], 1 on the model's own tokens.
        config: an AdvantageConfig, a dict/DictConfig of its fields, or None for the defaults.

    Returns:
        advantages [B, T] float32, returns [B, T].
    """
    estimator = ESTIMATORS.get(name)
    if estimator is None:
        raise ValueError(f"unknown advantage estimator {name!r}; valid: {', '.join(sorted(ESTIMATORS))}")
    if not isinstance(fields, SampleFields):
        fields = SampleFields.from_extra_fields(fields)
    if not isinstance(response_mask, torch.Tensor) or response_mask.dim() != 2:
        shape = tuple(response_mask.shape) if isinstance(response_mask, torch.Tensor) else type(response_mask).__name__
        raise ValueError(f"response_mask is {shape}, expected a [B, T] tensor")
    if response_mask.shape[0] != len(fields):
        raise ValueError(f"response_mask has {response_mask.shape[0]} rows for {len(fields)} samples")
    binary = (response_mask == 0) | (response_mask == 1)  # NaN compares false: caught here too
    if not bool(binary.all()):
        row, col = (int(x) for x in torch.nonzero(~binary)[0])
        raise ValueError(f"response_mask[{row}, {col}] is {float(response_mask[row, col])!r}, expected 0 or 1 "
                         f"(sample {row})")
    return estimator(fields, response_mask, AdvantageConfig.from_config(config))
