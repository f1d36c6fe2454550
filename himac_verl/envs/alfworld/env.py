"""``AlfWorldEnv``: ALFWorld 0.4.2 text games on TextWorld's PDDL backend, one game per reset.

The code path is the one ``AlfredTWEnv.init_env`` uses (``PddlEnv`` with ``AlfredDemangler(shuffle=False)``,
which gives the object names the walkthroughs use, and ``AlfredInfos``), minus ``AlfredTWEnv`` itself,
which only finds games that ship ``traj_data.json``. One TextWorld env is built per instance and each
reset *loads* the next game into it: building a new ``PddlEnv`` per game loads a fresh copy of
fast-downward's shared library that is never unloaded (the memory growth of docs/envs.md, "Memory recycling").

Observation text: the game's feedback only (the intro banner dropped; ``Nothing happens.`` after an
invalid action). The admissible commands are in ``Observation.admissible_actions`` and NOT in the text: the
prompt templates show the list once (``$admissible``), and the loops' history entries repeat the
observation text, so a list in the text would be repeated once per past step (the executor prompt grew from
about 650 to 3,000 tokens in 10 steps). ``help`` is left out of the list (its answer is a fixed command
reference, never state). Actions are projected onto the list by
:func:`himac_verl.envs.projection.project_admissible` (exact after normalising case/blanks, else a
conservative fuzzy match, else invalid). Reward: 10 on the winning step
(``10 * won``), else 0; an invalid action gives ``INVALID_ACTION_PENALTY``, leaves the game untouched
and still counts toward ``max_steps`` (50).

Anchor (GiGPO's state key): the feedback plus the sorted admissible list, which pins down where the agent
is, what it holds and what is open there; an invalid step keeps the previous anchor (nothing changed).
"""

from __future__ import annotations

from typing import Any

from himac_verl.envs.alfworld.data import game_file, task_type
from himac_verl.envs.base import (INVALID_ACTION_PENALTY, SUCCESS_REWARD, AgentEnv, Observation, ResetResult, StepResult,
                                  TaskSpec)
from himac_verl.envs.projection import FUZZY_THRESHOLD, action_text, project_admissible

BANNER = "-= Welcome to TextWorld, ALFRED! =-"
TASK_MARKER = "Your task is to: "
INVALID_FEEDBACK = "Nothing happens."  # what the game itself answers to a command it does not know


def format_admissible(commands: list[str]) -> str:
    """The list as one line (``Admissible actions: 'look', ...``), for callers that want it as text; the
    observation text does not carry it (the prompts use ``himac_verl.agent.prompts.format_admissible``)."""
    return "Admissible actions: " + ", ".join(f"'{c}'" for c in commands)


class AlfWorldEnv(AgentEnv):
    """One ALFWorld instance (one TextWorld env, reloaded per game). Not thread safe."""

    name = "alfworld"
    cheap_to_build = True  # the TextWorld env is built on the first reset

    def __init__(self, max_steps: int = 50, fuzzy_threshold: float = FUZZY_THRESHOLD, include_help: bool = False) -> None:
        if not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"AlfWorldEnv max_steps must be an int >= 1, got {max_steps!r}")
        if not 0 < fuzzy_threshold <= 100:
            raise ValueError(f"AlfWorldEnv fuzzy_threshold must be in (0, 100], got {fuzzy_threshold!r}")
        self.max_steps = max_steps
        self.fuzzy_threshold = float(fuzzy_threshold)
        self.include_help = include_help
        self._tw = None  # the TextWorld env, built on the first reset
        self._done = True
        self._admissible: list[str] = []

    @staticmethod
    def action_format() -> str:
        return "one of the admissible actions, written exactly as listed"

    # -- TextWorld ------------------------------------------------------------------------------------

    def _load(self, path: str):
        if self._tw is None:
            import textworld
            from alfworld.agents.environment.alfred_tw_env import AlfredDemangler, AlfredInfos

            infos = textworld.EnvInfos(won=True, admissible_commands=True, feedback=True, extras=["gamefile"])
            self._tw = textworld.start(path, infos, wrappers=[AlfredDemangler(shuffle=False), AlfredInfos])
        else:
            self._tw.load(path)
        return self._tw.reset()

    def close(self) -> None:
        """Drop the TextWorld env. Its copy of fast-downward's library stays mapped: unloading it
        (``fast_downward.close_lib``) makes the interpreter segfault at exit once a few copies were
        unloaded, so an instance is meant to live as long as its process and be reused (the pool does)."""
        tw, self._tw = self._tw, None
        if tw is not None:
            tw.close()
        self._done = True

    # -- episode --------------------------------------------------------------------------------------

    def reset(self, task: TaskSpec) -> ResetResult:
        if task.env != self.name:
            raise ValueError(f"AlfWorldEnv.reset: task.env must be {self.name!r}, got {task.env!r}")
        path = game_file(task.split, task.task_id)  # validates split and id
        state = self._load(str(path))
        feedback = state["feedback"].replace(BANNER, "").strip()
        instruction = feedback.split(TASK_MARKER, 1)[1].strip() if TASK_MARKER in feedback else ""
        self._steps = 0
        self._done = False
        obs = self._observe(feedback, state["admissible_commands"])
        info = {"feedback": feedback, "gamefile": str(path), "task_uid": task.uid}
        return ResetResult(obs, instruction, task_type(task.task_id), info)

    def step(self, action: str | None) -> StepResult:
        if self._tw is None:
            raise RuntimeError("AlfWorldEnv.step called before reset")
        if self._done:
            raise RuntimeError("AlfWorldEnv.step called after the episode ended; call reset")
        self._steps += 1
        projection = project_admissible(action_text(action), self._admissible, self.fuzzy_threshold)
        info: dict[str, Any] = {"projection": projection.how, "steps": self._steps}
        if projection.command is None:
            obs = Observation(INVALID_FEEDBACK, self._anchor, admissible_actions=list(self._admissible))
            reward, won = INVALID_ACTION_PENALTY, False
            info["feedback"] = INVALID_FEEDBACK
        else:
            state, _, _ = self._tw.step(projection.command)
            won = bool(state["won"])
            reward = SUCCESS_REWARD if won else 0.0
            info["feedback"] = state["feedback"]
            obs = self._observe(state["feedback"].strip(), state["admissible_commands"])
        self._done = won or self._steps >= self.max_steps
        return StepResult(obs, reward, self._done, won, projection.command is not None, projection.command, None, info)

    def _observe(self, feedback: str, admissible: list[str]) -> Observation:
        self._admissible = [c for c in admissible if self.include_help or c != "help"]
        self._anchor = feedback + "\n" + "\n".join(sorted(self._admissible))
        return Observation(feedback, self._anchor, admissible_actions=list(self._admissible))
