"""Role-aware pieces of the HiMAC trainer step, as pure functions over the samples' ``extra_fields``.

The trainer (``himac_verl.trainer.trainer``) calls these between verl's stages:

* :func:`phase_keep_mask` — which samples enter the update in this step's phase (the others are dropped
  from the batch and cleared from TransferQueue before old-log-prob, so a frozen role costs nothing and
  gets no KL/entropy gradient either);
* :func:`mini_batch_rows` — the optimizer-step count per update is our config, not a side effect of how
  many turn samples a phase produced;
* :func:`role_metrics`, :func:`advantage_metrics` — the per-step metrics by role that the README documents.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pandas as pd

from himac_verl.trainer.coevolution import sample_trains

METRIC_PREFIX = "himac"


def phase_keep_mask(extra_fields: Sequence[dict[str, Any]], phase: str) -> np.ndarray:
    """bool[B]: True where the sample trains in ``phase`` (see ``coevolution.sample_trains``).

    A sample without ``role``/``pass`` is an error naming the sample index: it did not come from our
    agent loops, and guessing would train the wrong role.
    """
    keep = np.zeros(len(extra_fields), dtype=bool)
    for i, fields in enumerate(extra_fields):
        try:
            role, pass_ = fields["role"], fields["pass"]
        except (KeyError, TypeError) as err:
            raise ValueError(
                f"sample {i}: extra_fields has no {err} (got {fields!r:.200}); HiMAC phases need the sample "
                "contract fields written by himac_verl's agent loops (agent_name himac_agent / flat_agent)"
            ) from None
        keep[i] = sample_trains(phase, role, pass_)
    return keep


def failed_mask(extra_fields: Sequence[dict[str, Any]]) -> np.ndarray:
    """bool[B]: True on samples of episodes that ended on an env or server failure (contract ``failed``).
    They stay in the batch so the estimators can see which groups lost episodes, but they never train: the
    trainer zeroes their loss masks and the estimators give them advantage 0."""
    return np.fromiter((bool(f.get("failed", False)) for f in extra_fields), dtype=bool, count=len(extra_fields))


@dataclass(frozen=True)
class UpdateBudget:
    """How many optimizer steps one update takes, sized in TURN SAMPLES like verl-agent's
    ``ppo_mini_batch_size`` (a mini-batch of ``mini_batch_turns`` rows per step, so a step with more turn
    samples takes more steps), with its own size for phase A, whose batch holds only the planner's one
    sample per blueprint (16 tasks x 8 blueprints = 128 rows would otherwise make a single step).

    steps = ceil(rows / mini_batch), at least 1; ``himac.update_budget.*`` in the config.
    """

    mini_batch_turns: int = 256
    macro_mini_batch_turns: int = 32
    # Adam's moments carry a phase's gradients about 1/(1-beta1) = 10 steps (half-life ~6.6) into the next
    # phase; true zeroes the actor optimizer's state at every phase switch (docs/credit.md).
    reset_optimizer_on_phase_switch: bool = False

    def __post_init__(self) -> None:
        for name in ("mini_batch_turns", "macro_mini_batch_turns"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"himac.update_budget.{name}={value!r} must be an int >= 1")
        if not isinstance(self.reset_optimizer_on_phase_switch, bool):
            raise ValueError(f"himac.update_budget.reset_optimizer_on_phase_switch={self.reset_optimizer_on_phase_switch!r} "
                             "must be true or false")

    @classmethod
    def from_config(cls, section: Any) -> UpdateBudget:
        section = dict(section or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise ValueError(f"himac.update_budget: unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(known))}")
        return cls(**{k: v for k, v in section.items() if v is not None})

    def mini_batch(self, phase: str) -> int:
        return self.macro_mini_batch_turns if phase == "macro" else self.mini_batch_turns

    def optim_steps(self, phase: str, num_rows: int) -> int:
        """Optimizer steps for an update of ``num_rows`` trainable turn samples in ``phase``."""
        return max(1, math.ceil(num_rows / self.mini_batch(phase)))


def mini_batch_rows(num_rows: int, num_updates: int, dp_size: int) -> int:
    """Rows per optimizer step so that one update makes exactly ``num_updates`` steps per epoch.

    ``num_rows`` must already be padded to a multiple of ``dp_size * num_updates`` (the trainer asks
    verl's padding for that multiple).
    """
    if num_updates < 1:
        raise ValueError(f"optimizer steps per update={num_updates} must be >= 1")
    unit = dp_size * num_updates
    if num_rows <= 0 or num_rows % unit:
        raise ValueError(f"batch of {num_rows} rows is not a positive multiple of dp_size*optim_steps ({unit})")
    return num_rows // num_updates


def _stats(prefix: str, values: np.ndarray, out: dict[str, float]) -> None:
    if len(values) == 0:
        return
    out[f"{prefix}/mean"] = float(np.mean(values))
    out[f"{prefix}/std"] = float(np.std(values))
    out[f"{prefix}/max"] = float(np.max(values))
    out[f"{prefix}/min"] = float(np.min(values))


def role_metrics(extra_fields: Sequence[dict[str, Any]], response_lengths: Sequence[int]) -> dict[str, float]:
    """Per-step metrics by role, from every sample the loops produced this step (trained or not).

    Args:
        extra_fields: B dicts (the sample contract plus the loops' ``flags``, ``num_subgoals``).
        response_lengths: B response token counts.

    Keys (prefix ``himac/``): ``success/<pass>``, ``return/<pass>``, ``episodes/<pass>`` over unique
    episodes of each pass (``flat`` for the baselines); ``planner/parse_failure_rate``,
    ``planner/subgoals_per_blueprint`` (parsed blueprints); ``executor/sub_done_rate``,
    ``executor/budget_forced_rate`` (per executor turn); ``invalid_action_rate`` (per executor/flat turn);
    ``tokens_per_episode/<role>``; ``samples/<role>``.
    """
    if len(extra_fields) != len(response_lengths):
        raise ValueError(f"{len(extra_fields)} extra_fields but {len(response_lengths)} response_lengths")
    if not extra_fields:
        return {}
    df = _frame(extra_fields)
    df["tokens"] = np.asarray(response_lengths, dtype=float)
    flags = pd.DataFrame([f.get("flags") or {} for f in extra_fields]).fillna(False).astype(bool)
    for name in ("parse_failure", "sub_done", "budget_forced", "invalid_action"):
        if name not in flags:
            flags[name] = False
    p = METRIC_PREFIX
    out: dict[str, float] = {}

    episodes = df.drop_duplicates("episode")
    for pass_, group in episodes.groupby("pass"):
        label = "flat" if (group["role"] == "flat").all() else pass_
        out[f"{p}/success/{label}"] = float(group["won"].mean())
        out[f"{p}/return/{label}"] = float(group["ret"].mean())
        out[f"{p}/episodes/{label}"] = float(len(group))

    for role, group in df.groupby("role"):
        out[f"{p}/samples/{role}"] = float(len(group))
        out[f"{p}/tokens_per_episode/{role}"] = float(group.groupby("episode")["tokens"].sum().mean())

    planner = (df["role"] == "planner").to_numpy()
    if planner.any():
        out[f"{p}/planner/parse_failure_rate"] = float(flags["parse_failure"][planner].mean())
        parsed = planner & ~flags["parse_failure"].to_numpy()
        if parsed.any():
            out[f"{p}/planner/subgoals_per_blueprint"] = float(df.loc[parsed, "num_subgoals"].mean())
    executor = (df["role"] == "executor").to_numpy()
    if executor.any():
        out[f"{p}/executor/sub_done_rate"] = float(flags["sub_done"][executor].mean())
        out[f"{p}/executor/budget_forced_rate"] = float(flags["budget_forced"][executor].mean())
    acting = ~planner
    if acting.any():
        out[f"{p}/invalid_action_rate"] = float(flags["invalid_action"][acting].mean())
    return {k: v for k, v in out.items() if math.isfinite(v)}


def advantage_metrics(
    extra_fields: Sequence[dict[str, Any]], advantages: Sequence[float], real: Sequence[bool]
) -> dict[str, float]:
    """Advantage statistics of the samples that train, by level: ``himac/adv/macro/*`` (planner samples),
    ``himac/adv/micro/*`` (micro-pass executor samples), ``himac/adv/flat/*``; ``himac/samples/trained``.

    ``advantages`` is each sample's scalar advantage (the value on its response tokens); ``real`` is False
    on verl's padding rows.
    """
    df = _frame(extra_fields)
    adv = np.asarray(advantages, dtype=float)
    used = np.asarray(real, dtype=bool)
    p = METRIC_PREFIX
    out = {f"{p}/samples/trained": float(used.sum())}
    role, pass_ = df["role"].to_numpy(), df["pass"].to_numpy()
    _stats(f"{p}/adv/macro", adv[used & (role == "planner")], out)
    _stats(f"{p}/adv/micro", adv[used & (role == "executor") & (pass_ == "micro")], out)
    _stats(f"{p}/adv/flat", adv[used & (role == "flat")], out)
    return out


def _frame(extra_fields: Sequence[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "role": [f["role"] for f in extra_fields],
            "pass": [f["pass"] for f in extra_fields],
            "episode": [f["episode_uid"] for f in extra_fields],
            "won": [bool(f["won"]) for f in extra_fields],
            "ret": [float(f["episode_return"]) for f in extra_fields],
            "num_subgoals": [f.get("num_subgoals", 0) for f in extra_fields],
        }
    )
