"""The small typed core every other module speaks: roles, passes, phases and the per-sample contract.

It imports nothing from the rest of the package (the bottom layer), so loops, estimators, trainer, eval
and benchmarks can all depend on it without cycles.
"""

from himac_verl.core.contract import (CONTRACT_FIELDS, PASSES, PHASE_CODES, ROLES, LoopPhase, Pass, Phase, Role,
                                      TurnSample)

__all__ = ["CONTRACT_FIELDS", "PASSES", "PHASE_CODES", "ROLES", "LoopPhase", "Pass", "Phase", "Role", "TurnSample"]
