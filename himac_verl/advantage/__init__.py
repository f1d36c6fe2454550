"""HiMAC's advantage estimators: ``himac`` (macro/micro), ``episode_grpo`` and ``gigpo`` (flat baselines).

Entry for the trainer::

    fields = SampleFields.from_extra_fields(extra_fields, is_padding=is_padding)
    advantages, returns = compute_advantage("himac", fields, response_mask, {"norm_by_std": True})

This package does not import verl; :mod:`himac_verl.advantage.registry` (run by the plugin) does.
"""

from himac_verl.advantage.config import AdvantageConfig
from himac_verl.advantage.dispatch import ESTIMATORS, compute_advantage
from himac_verl.advantage.estimators import (
    compute_episode_grpo_advantage,
    compute_gigpo_advantage,
    compute_himac_advantage,
    episode_grpo_scalar,
    gigpo_scalar,
    macro_advantage,
    micro_advantage,
    outcome_advantage,
)
from himac_verl.advantage.fields import CONTRACT_FIELDS, PASSES, ROLES, FieldError, SampleFields
from himac_verl.advantage.groups import (
    broadcast_to_tokens,
    discounted_step_returns,
    episode_group_advantage,
    failure_dead_groups,
    group_normalize,
)

__all__ = [
    "AdvantageConfig",
    "CONTRACT_FIELDS",
    "ESTIMATORS",
    "FieldError",
    "PASSES",
    "ROLES",
    "SampleFields",
    "broadcast_to_tokens",
    "compute_advantage",
    "compute_episode_grpo_advantage",
    "compute_gigpo_advantage",
    "compute_himac_advantage",
    "discounted_step_returns",
    "episode_group_advantage",
    "episode_grpo_scalar",
    "failure_dead_groups",
    "gigpo_scalar",
    "group_normalize",
    "macro_advantage",
    "micro_advantage",
    "outcome_advantage",
]
