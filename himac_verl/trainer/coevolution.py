"""Iterative co-evolution: which role learns at which training step, and which samples enter the update.

HiMAC alternates two phases (paper, "iterative co-evolution"):

* phase A, ``macro``: the planner learns from macro advantages; the executor is frozen, so executor
  samples never enter the update;
* phase B, ``micro``: the executor learns from micro advantages under the fixed best blueprint; planner
  samples (and the greedy scoring episodes of the macro pass) never enter the update.

Other modes: ``joint`` (both roles every step: the paper's "no co-evolution" ablation) and ``flat`` (the
GRPO / GiGPO baselines, no planner). The phase of a step is a pure function of the step number and the
schedule's settings, so a resumed run continues the schedule exactly as long as the settings match; the
settings are saved in checkpoints and a mismatch on resume is an error naming the setting.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from himac_verl.core.contract import PASSES, ROLES, Phase

MODES = ("coevolve", "joint", "flat", "macro", "micro")
PHASES = (Phase.MACRO.value, Phase.MICRO.value)  # the two phases co-evolution alternates (start_phase)


@dataclass(frozen=True)
class CoEvolutionSchedule:
    """Phase per global step (1-based, as verl counts).

    ``mode``: ``coevolve`` alternates ``start_phase`` and the other phase every ``phase_length`` steps;
    ``joint`` trains both roles every step; ``flat`` is the baseline; ``macro`` / ``micro`` pin one phase
    (for debugging and for the bandit test).
    """

    mode: str = "coevolve"
    # HiMAC does not publish its phase length. 15: the recipes' 150 steps make 10 phases, 5 of each, ending
    # on phase B (the executor adapts to the planner's last blueprints), and a phase outlasts the ~6 steps
    # over which Adam's moments still carry the other phase's gradients (docs/credit.md).
    phase_length: int = 15
    start_phase: str = "macro"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"himac.schedule.mode={self.mode!r} is not one of {MODES}")
        if not isinstance(self.phase_length, int) or self.phase_length < 1:
            raise ValueError(f"himac.schedule.phase_length={self.phase_length!r} must be an integer >= 1")
        if self.start_phase not in PHASES:
            raise ValueError(f"himac.schedule.start_phase={self.start_phase!r} is not one of {PHASES}")

    @classmethod
    def from_config(cls, cfg: Any) -> CoEvolutionSchedule:
        """Build from a mapping / DictConfig with keys mode, phase_length, start_phase (all optional)."""
        get = cfg.get if hasattr(cfg, "get") else (lambda k, d=None: getattr(cfg, k, d))
        defaults = cls()

        def value(key: str):
            v = get(key, None)
            return getattr(defaults, key) if v is None else v

        return cls(mode=str(value("mode")), phase_length=value("phase_length"), start_phase=str(value("start_phase")))

    def phase(self, step: int) -> str:
        """The phase of training step ``step`` (>= 1): ``macro``, ``micro``, ``joint`` or ``flat``."""
        if step < 1:
            raise ValueError(f"step={step} must be >= 1 (verl counts training steps from 1)")
        if self.mode in ("joint", "flat", "macro", "micro"):
            return self.mode
        block = (step - 1) // self.phase_length
        other = "micro" if self.start_phase == "macro" else "macro"
        return self.start_phase if block % 2 == 0 else other

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check_resume(self, saved: dict[str, Any]) -> None:
        """Raise if a checkpoint's schedule differs from this one (the phase sequence would change)."""
        mine = self.state_dict()
        for key, value in saved.items():
            if key in mine and mine[key] != value:
                raise ValueError(
                    f"resuming with himac.schedule.{key}={mine[key]!r}, but the checkpoint was trained with "
                    f"{value!r}; set it back to {value!r} to continue the same schedule"
                )


def sample_trains(phase: str, role: str, pass_: str) -> bool:
    """Does a sample of ``role`` from ``pass_`` enter the update in ``phase``?

    macro: planner samples only. micro: executor samples of the micro pass only (the macro pass's greedy
    scoring episodes never train). joint: both of those. flat: flat samples.
    """
    if role not in ROLES:
        raise ValueError(f"role={role!r} is not one of {ROLES}")
    if pass_ not in PASSES:
        raise ValueError(f"pass={pass_!r} is not one of {PASSES}")
    planner = role == "planner"
    micro_executor = role == "executor" and pass_ == "micro"
    if phase == "macro":
        return planner
    if phase == "micro":
        return micro_executor
    if phase == "joint":
        return planner or micro_executor
    if phase == "flat":
        return role == "flat"
    raise ValueError(f"phase={phase!r} is not one of ('macro', 'micro', 'joint', 'flat')")
