"""The environment interface shared by Sokoban, ALFWorld and WebShop, and used by the agent loops.

An environment instance plays one episode at a time:

    env = make_env("sokoban", config)           # registry in himac_verl.envs
    first = env.reset(TaskSpec("sokoban", "train", "17"))
    while not step.done:
        step = env.step(action_text)            # text already extracted from the model's output

``step`` never raises on bad actions: an action that cannot be projected onto a legal one is flagged
(``is_action_valid=False``), costs ``INVALID_ACTION_PENALTY`` and leaves the state unchanged; the episode
goes on. ``done`` is set on success, on the env's own terminal states and at ``max_steps``.
Agent loops reach environments through the pool (``himac_verl.envs.pool``), never directly, because env
calls block (ALFWorld resets take 1-2 s).
"""

from __future__ import annotations

import abc
import inspect
from dataclasses import dataclass, field
from typing import Any

import numpy as np

INVALID_ACTION_PENALTY = -0.1
SUCCESS_REWARD = 10.0


@dataclass(frozen=True)
class TaskSpec:
    """One task instance: which env, which split, which game/seed/goal inside it.

    ``task_id`` is env specific: a Sokoban seed, an ALFWorld game folder (relative to the split), a
    WebShop goal index. ``uid`` is the sample contract's ``task_uid``.
    """

    env: str
    split: str
    task_id: str

    @property
    def uid(self) -> str:
        return f"{self.env}/{self.split}/{self.task_id}"


@dataclass
class Observation:
    """What the agent sees after reset or after a step."""

    text: str  # the observation text for the prompt (env feedback, page, grid ...)
    anchor: str  # canonical text of the env state (GiGPO's anchor key): equal states, equal anchors
    image: np.ndarray | None = None  # HxWx3 uint8 RGB, where the env renders one
    admissible_actions: list[str] | None = None  # legal actions where the env lists them


@dataclass
class ResetResult:
    observation: Observation
    instruction: str  # the task in words ("put a cool tomato in microwave", the WebShop goal ...)
    task_type: str  # ALFWorld: Pick/Look/Clean/Heat/Cool/Pick2; WebShop: "webshop"; Sokoban: "sokoban"
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class StepResult:
    observation: Observation
    reward: float  # this step's reward, invalid-action penalty included
    done: bool
    won: bool  # the episode succeeded (only ever True on the step that ends it)
    is_action_valid: bool
    action: str | None  # the legal action actually executed (None when invalid)
    score: float | None = None  # WebShop score in [0, 1]; Sokoban boxes-on-target fraction; else None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def penalty(self) -> float:
        """The invalid-action part of ``reward``: ``INVALID_ACTION_PENALTY`` on an invalid step, else 0.

        Every env charges exactly this on a step whose action is invalid, on top of whatever its own rules
        charge for the step (Sokoban: the -0.1 step cost of a no-op move, so -0.2 in all), so a turn's env
        reward without the penalty is ``reward - penalty`` (the credit rules place the two apart).
        """
        return 0.0 if self.is_action_valid else INVALID_ACTION_PENALTY


class AgentEnv(abc.ABC):
    """One environment instance. Not thread safe; one episode at a time."""

    name: str = ""
    max_steps: int = 0
    # True where __init__ loads nothing (no data, no processes): check_options then builds one instance
    cheap_to_build: bool = False

    @abc.abstractmethod
    def reset(self, task: TaskSpec) -> ResetResult: ...

    @abc.abstractmethod
    def step(self, action: str) -> StepResult: ...

    def observe_blueprint(self, subgoals: tuple[str, ...]) -> None:  # noqa: B027 - optional hook
        """Called by the HiMAC loop after ``reset`` with the blueprint the episode executes.

        Real environments ignore it (the executor alone acts on the world). Diagnostic envs that score
        the plan itself (``bandit``) use it.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        """Raise TypeError/ValueError naming the option when ``options`` (``himac.env_kwargs``) cannot build
        this env. Runs before Ray starts, so it must load no data: every option must be a parameter of
        ``__init__`` (plus ``extra_option_names()`` where ``__init__`` takes ``**options``), and envs that are
        ``cheap_to_build`` are built once, so their own value checks run too."""
        signature = inspect.signature(cls.__init__)
        known = [n for n, p in signature.parameters.items()
                 if n != "self" and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
        known += list(cls.extra_option_names())
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise TypeError(f"{cls.__name__} has no option {unknown[0]!r} (options: {', '.join(known)})")
        if cls.cheap_to_build:
            cls(**options).close()

    @classmethod
    def extra_option_names(cls) -> tuple[str, ...]:
        """Options ``__init__`` takes through ``**options`` (e.g. Sokoban's level-generator settings)."""
        return ()

    @classmethod
    def worst_return(cls, max_steps: int, **options: Any) -> float:
        """A lower bound on the return of any episode of at most ``max_steps`` steps, from the env's reward
        rules. Default: envs whose only negative reward is the invalid-action penalty (ALFWorld, WebShop).
        The agent loop's default return of an unparsable blueprint lies strictly below it."""
        return max_steps * INVALID_ACTION_PENALTY

    @staticmethod
    def action_format() -> str:
        """A short text telling the model what an action looks like (goes into prompts)."""
        return "one action"
