"""Roles, passes, phases and the sample contract: each stated once, here.

The paper's concepts as types:

- :class:`Role`: who wrote a sample. ``planner`` writes the blueprint (macro level), ``executor`` acts under
  the active subgoal (micro level), ``flat`` is the GRPO / GiGPO baselines' single policy.
- :class:`Pass`: which pass of a HiMAC call produced a sample. ``macro``: the N blueprints, each scored by
  a greedy execution; ``micro``: the N sampled executions under the best blueprint z*.
- :class:`Phase`: what a TRAINING STEP trains (iterative co-evolution): ``macro`` (phase A, the planner),
  ``micro`` (phase B, the executor), ``joint`` (both: the no-co-evolution ablation), ``flat`` (baselines).
  :data:`PHASE_CODES` are their numbers in the metrics (``himac/phase``).
- :class:`LoopPhase`: what an AGENT-LOOP CALL plays: a training phase, or ``eval`` (one greedy blueprint
  and one greedy execution).

:class:`TurnSample` is the per-sample contract: the fields every training sample carries in verl's
``extra_fields`` (one sample = one model turn). The agent loops write them with
:meth:`TurnSample.to_extra_fields`; :meth:`TurnSample.from_extra_fields` reads one sample back.
:data:`CONTRACT_FIELDS` is the key list, derived from the dataclass (the batch validation in
``advantage/fields.py`` reads whole columns by these keys; a few readers in the trainer and the eval log
still index the dicts by name). What each field means is written beside it below; docs/advantage.md
("Contract fields read here") says how the estimators use them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any


class Role(str, Enum):
    PLANNER = "planner"
    EXECUTOR = "executor"
    FLAT = "flat"


class Pass(str, Enum):
    MACRO = "macro"
    MICRO = "micro"


class Phase(str, Enum):
    MACRO = "macro"  # phase A: the planner learns, the executor is frozen
    MICRO = "micro"  # phase B: the executor learns under fixed best blueprints
    JOINT = "joint"  # both roles every step (the "no co-evolution" ablation)
    FLAT = "flat"  # the flat baselines (GRPO, GiGPO)


class LoopPhase(str, Enum):
    MACRO = "macro"
    MICRO = "micro"
    JOINT = "joint"
    FLAT = "flat"
    EVAL = "eval"  # one greedy blueprint and one greedy execution (validation, the eval CLI)


ROLES: tuple[str, ...] = tuple(r.value for r in Role)
PASSES: tuple[str, ...] = tuple(p.value for p in Pass)
PHASE_CODES: dict[str, int] = {p.value: i for i, p in enumerate(Phase)}  # metrics' himac/phase


@dataclass(frozen=True)
class TurnSample:
    """The contract fields of one training sample (one model turn)."""

    role: str  # Role value
    task_uid: str  # the task this sample belongs to (groups: macro by task, GRPO by task)
    blueprint_uid: str | None  # the blueprint the turn wrote (planner) or executed (executor); None for flat
    episode_uid: str  # the episode the turn belongs to
    pass_: str  # Pass value (key "pass" in extra_fields); flat samples carry "macro"
    turn: int  # 0 for the planner, 1.. for executor and flat turns, in episode order
    subgoal_index: int  # the active subgoal of an executor turn, -1 otherwise
    step_reward: float  # this turn's env reward (the invalid-action penalty included)
    episode_return: float  # the episode's return (the planner's: its scoring episode's)
    won: bool  # the episode succeeded
    anchor: str | None  # canonical env state the turn acted on (GiGPO's anchor groups)
    penalty: float  # this turn's invalid-action penalty (<= 0), already included in step_reward
    episode_penalty: float  # sum of `penalty` over the episode's turns (<= 0); episode_return includes it
    failed: bool  # the episode ended on an env crash/hang or a failed generate call: it never trains

    def to_extra_fields(self) -> dict[str, Any]:
        """The ``extra_fields`` entries of this sample (key ``pass`` for :attr:`pass_`)."""
        return {_KEY.get(f.name, f.name): getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_extra_fields(cls, extra: Mapping[str, Any]) -> TurnSample:
        """Read one sample's contract fields (extra keys ignored); a missing key raises KeyError naming it.
        Values are taken as they are: ``advantage.fields.SampleFields`` validates whole batches."""
        missing = [k for k in CONTRACT_FIELDS if k not in extra]
        if missing:
            raise KeyError(f"extra_fields has no contract field {missing[0]!r} (the contract: "
                           f"{', '.join(CONTRACT_FIELDS)})")
        return cls(**{f.name: extra[_KEY.get(f.name, f.name)] for f in dataclasses.fields(cls)})


_KEY = {"pass_": "pass"}  # dataclass field -> extra_fields key where they differ
CONTRACT_FIELDS: tuple[str, ...] = tuple(_KEY.get(f.name, f.name) for f in dataclasses.fields(TurnSample))
