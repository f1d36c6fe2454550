"""The HiMAC agent loop (planner turn, then goal-conditioned executor turns) and the flat baseline loop,
as verl agent loops (``himac_agent``, ``flat_agent``), with blueprint parsing, ``best_blueprint``, prompt
templates per env and dataset-row helpers. The loop modules import verl's agent-loop machinery; import
them (or call ``registry.register``) only where verl is wanted."""

from himac_verl.agent.blueprint import (
    SUB_DONE,
    Blueprint,
    BlueprintCandidate,
    BlueprintParseError,
    best_blueprint,
    declares_sub_done,
    parse_blueprint,
    strip_sub_done,
)

__all__ = ["SUB_DONE", "Blueprint", "BlueprintCandidate", "BlueprintParseError", "best_blueprint",
           "declares_sub_done", "parse_blueprint", "strip_sub_done"]
