"""The blueprint bandit: a one-step diagnostic environment whose outcome depends only on the blueprint.

It isolates the macro (planner) learning signal: an episode wins (reward 10) exactly when the blueprint
it executes equals ``winning_plan``; the executor's single action is ignored. Paired with the ``choice``
blueprint format (the planner's first token picks one of k fixed blueprints, which even a tiny random
model can do), phase-A training must raise the planner's probability of choosing the winner. The env
learns the blueprint through ``AgentEnv.observe_blueprint``, which the HiMAC loop calls after reset.
Tasks differ only in their instruction text (the task id is in it), so held-out ids give held-out prompts.
"""

from __future__ import annotations

from himac_verl.envs.base import SUCCESS_REWARD, AgentEnv, Observation, ResetResult, StepResult, TaskSpec


class BlueprintBanditEnv(AgentEnv):
    name = "bandit"
    cheap_to_build = True

    def __init__(self, winning_plan: list[str] | tuple[str, ...] = ("press the red button",), max_steps: int = 1):
        if not winning_plan or not all(isinstance(g, str) and g for g in winning_plan):
            raise ValueError(f"bandit winning_plan must be a non-empty list of subgoal strings, got {winning_plan!r}")
        if max_steps != 1:
            raise ValueError(f"bandit max_steps must be 1 (a one-step bandit), got {max_steps!r}")
        self.winning_plan = tuple(winning_plan)
        self.max_steps = 1
        self._plan: tuple[str, ...] | None = None
        self._task: TaskSpec | None = None

    def reset(self, task: TaskSpec) -> ResetResult:
        if task.env != self.name:
            raise ValueError(f"task.env={task.env!r} is not {self.name!r}")
        self._task, self._plan = task, None
        obs = Observation(text="There is a red button and a blue button.", anchor="bandit/start")
        return ResetResult(obs, instruction=f"Bandit task {task.task_id}: pick the plan that wins.",
                           task_type="bandit")

    def observe_blueprint(self, subgoals: tuple[str, ...]) -> None:
        self._plan = tuple(subgoals)

    def step(self, action: str | None) -> StepResult:
        if self._task is None:
            raise RuntimeError("bandit step before reset")
        won = self._plan == self.winning_plan
        obs = Observation(text="The game is over.", anchor="bandit/end")
        return StepResult(obs, reward=SUCCESS_REWARD if won else 0.0, done=True, won=won, is_action_valid=True,
                          action=action, score=1.0 if won else 0.0)
