"""Settings of the HiMAC and flat agent loops, read from the trainer config's ``himac`` section.

verl hands every agent loop the whole trainer config; the loops read (all optional, defaults below):

    himac.group_size                 N episodes per pass of one call (default 8); eval runs 1
    himac.phase                      phase when the batch carries no ``himac_phase`` column (default joint)
    himac.env_kwargs                 kwargs for ``make_env(env, **env_kwargs)`` (e.g. Sokoban observation)
    himac.pool.{num_workers,reset_timeout_s,step_timeout_s}   env pool settings
    himac.agent.max_env_steps        global env-step limit of an episode (default per env: 15/50/15)
    himac.agent.subgoal_step_budget  env steps per subgoal before a forced advance (default per env 4/10/5)
    himac.agent.max_subgoals         blueprint limit (6); himac.agent.max_subgoal_chars (200)
    himac.agent.parse_failure_return return of a blueprint that does not parse (default per env: the
                                     env's worst possible episode return minus PARSE_FAILURE_MARGIN, so
                                     an unparsable plan scores strictly below every parsed one)
    himac.agent.blueprint_selection  best | random (ablation)
    himac.agent.blueprint_format     tagged (numbered subgoals in <plan>...</plan>, default) | choice (the
                                     first response token picks one of himac.agent.blueprint_choices:
                                     the blueprint-bandit diagnostic)
    himac.agent.use_sub_done         false = ablation: ``<sub_done>`` ignored, fixed-step switching
    himac.agent.flat_history_turns   last-k turns shown to the flat loop (default 2)
    himac.agent.template_version     prompt template version (v2; v1: before <sub_done> went after </action>); himac.agent.template_dir overrides the
                                     packaged templates (a folder with ``<env>/<role>.<version>.txt``)
    himac.agent.seed                 seed of the random-blueprint ablation (default 0)

Prompt and response limits come from verl's own ``actor_rollout_ref.rollout.prompt_length`` and
``response_length``. HiMAC does not publish its subgoal budget: the per-env defaults are our choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from himac_verl.agent.prompts import TEMPLATE_VERSION
from himac_verl.core.contract import LoopPhase
from himac_verl.envs.base import INVALID_ACTION_PENALTY

PHASES = tuple(p.value for p in LoopPhase)  # what one agent-loop call may play

# Dataset-row columns (rows.task_rows) that name the task and the phase; they reach ``run(**kwargs)``.
ENV_COLUMN, SPLIT_COLUMN, TASK_COLUMN, PHASE_COLUMN = "himac_env", "himac_split", "himac_task_id", "himac_phase"

# env -> (max_env_steps, subgoal_step_budget). Step limits are GiGPO's/HiMAC's published values; the
# subgoal budget is unpublished (our choice, roughly a third of a typical solved episode).
ENV_DEFAULTS: dict[str, tuple[int, int]] = {
    "sokoban": (15, 4),
    "alfworld": (50, 10),
    "webshop": (15, 5),
    "bandit": (1, 1),  # the one-step blueprint bandit (diagnostic)
}


# How far below the env's worst possible episode return an unparsable blueprint scores (default).
PARSE_FAILURE_MARGIN = 1.0


def default_parse_failure_return(env_name: str, max_env_steps: int, env_kwargs: dict | None = None) -> float:
    """The env's worst possible return over ``max_env_steps`` steps (``AgentEnv.worst_return``, derived from
    its reward rules) minus ``PARSE_FAILURE_MARGIN``: a blueprint that does not parse scores strictly below
    any parsed one, so the macro signal teaches the format. Envs outside the registry (tests) use the rule
    of envs whose only negative reward is the invalid-action penalty."""
    from himac_verl.envs import ENV_CLASSES, env_class

    options = {k: v for k, v in (env_kwargs or {}).items() if k == "num_boxes"}
    if env_name in ENV_CLASSES or ":" in env_name:
        worst = env_class(env_name).worst_return(max_env_steps, **options)
    else:
        worst = max_env_steps * INVALID_ACTION_PENALTY
    return float(worst) - PARSE_FAILURE_MARGIN


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    """Read ``key`` from a DictConfig / dict / None without caring which."""
    if cfg is None:
        return default
    getter = getattr(cfg, "get", None)
    value = getter(key, default) if getter is not None else getattr(cfg, key, default)
    return default if value is None else value


def _to_list(value: Any) -> list:
    if value is None:
        return []
    try:
        from omegaconf import ListConfig, OmegaConf

        if isinstance(value, ListConfig):
            return list(OmegaConf.to_container(value, resolve=True))
    except ImportError:  # pragma: no cover - omegaconf ships with verl
        pass
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError(f"expected a list, got {type(value).__name__}: {value!r}")
    return [list(v) if not isinstance(v, str) else [v] for v in value]


def _to_dict(value: Any) -> dict:
    if value is None:
        return {}
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(value, DictConfig):
            return dict(OmegaConf.to_container(value, resolve=True))
    except ImportError:  # pragma: no cover - omegaconf ships with verl
        pass
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping, got {type(value).__name__}: {value!r}")
    return dict(value)


@dataclass(frozen=True)
class LoopSettings:
    """Everything an agent-loop call needs besides the model and the batch row."""

    env_name: str
    group_size: int = 8
    default_phase: str = "joint"
    env_kwargs: dict = field(default_factory=dict)
    pool_kwargs: dict = field(default_factory=dict)
    max_env_steps: int = 15
    subgoal_step_budget: int = 4
    max_subgoals: int = 6
    max_subgoal_chars: int = 200
    parse_failure_return: float = 15 * INVALID_ACTION_PENALTY - PARSE_FAILURE_MARGIN
    blueprint_selection: str = "best"
    blueprint_format: str = "tagged"
    blueprint_choices: tuple[tuple[str, ...], ...] = ()
    use_sub_done: bool = True
    flat_history_turns: int = 2
    template_version: str = TEMPLATE_VERSION
    template_dir: str | None = None
    seed: int = 0
    prompt_length: int = 2048
    response_length: int = 512

    def __post_init__(self):
        checks = {
            "himac.group_size": (self.group_size, self.group_size >= 1),
            "himac.agent.max_env_steps": (self.max_env_steps, self.max_env_steps >= 1),
            "himac.agent.subgoal_step_budget": (self.subgoal_step_budget, self.subgoal_step_budget >= 1),
            "himac.agent.max_subgoals": (self.max_subgoals, self.max_subgoals >= 1),
            "himac.agent.max_subgoal_chars": (self.max_subgoal_chars, self.max_subgoal_chars >= 1),
            "himac.agent.flat_history_turns": (self.flat_history_turns, self.flat_history_turns >= 0),
            "himac.agent.blueprint_selection": (self.blueprint_selection,
                                                self.blueprint_selection in ("best", "random")),
            "himac.phase": (self.default_phase, self.default_phase in PHASES),
            "himac.agent.blueprint_format": (self.blueprint_format, self.blueprint_format in ("tagged", "choice")),
            "himac.agent.blueprint_choices": (self.blueprint_choices,
                                              self.blueprint_format != "choice" or (
                                                  len(self.blueprint_choices) >= 1
                                                  and all(len(c) >= 1 for c in self.blueprint_choices))),
            "actor_rollout_ref.rollout.prompt_length": (self.prompt_length, self.prompt_length >= 1),
            "actor_rollout_ref.rollout.response_length": (self.response_length, self.response_length >= 1),
        }
        for key, (value, ok) in checks.items():
            if not ok:
                raise ValueError(f"invalid agent-loop setting {key}={value!r}")

    @classmethod
    def from_config(cls, config: Any, env_name: str) -> LoopSettings:
        """Build from the trainer config (``DictConfig`` or dict) for one env."""
        himac = _get(config, "himac")
        agent = _get(himac, "agent")
        rollout = _get(_get(config, "actor_rollout_ref"), "rollout")
        if env_name in ENV_DEFAULTS:
            default_steps, default_budget = ENV_DEFAULTS[env_name]
        else:
            default_steps, default_budget = None, None
        max_env_steps = _get(agent, "max_env_steps", default_steps)
        budget = _get(agent, "subgoal_step_budget", default_budget)
        if max_env_steps is None or budget is None:
            raise ValueError(
                f"env {env_name!r} has no built-in step defaults (known: {sorted(ENV_DEFAULTS)}): set "
                f"himac.agent.max_env_steps and himac.agent.subgoal_step_budget")
        failure_return = _get(agent, "parse_failure_return", None)
        if failure_return is None:
            failure_return = default_parse_failure_return(env_name, int(max_env_steps), _to_dict(_get(himac, "env_kwargs")))
        return cls(
            env_name=env_name,
            group_size=int(_get(himac, "group_size", 8)),
            default_phase=str(_get(himac, "phase", "joint")),
            env_kwargs=_to_dict(_get(himac, "env_kwargs")),
            pool_kwargs=_to_dict(_get(himac, "pool")),
            max_env_steps=int(max_env_steps),
            subgoal_step_budget=int(budget),
            max_subgoals=int(_get(agent, "max_subgoals", 6)),
            max_subgoal_chars=int(_get(agent, "max_subgoal_chars", 200)),
            parse_failure_return=float(failure_return),
            blueprint_selection=str(_get(agent, "blueprint_selection", "best")),
            blueprint_format=str(_get(agent, "blueprint_format", "tagged")),
            blueprint_choices=tuple(tuple(str(g) for g in c) for c in _to_list(_get(agent, "blueprint_choices"))),
            use_sub_done=bool(_get(agent, "use_sub_done", True)),
            flat_history_turns=int(_get(agent, "flat_history_turns", 2)),
            template_version=str(_get(agent, "template_version", TEMPLATE_VERSION)),
            template_dir=_get(agent, "template_dir"),
            seed=int(_get(agent, "seed", 0)),
            prompt_length=int(_get(rollout, "prompt_length", 2048)),
            response_length=int(_get(rollout, "response_length", 512)),
        )
