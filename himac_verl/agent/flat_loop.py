"""The flat baseline loop (registered as ``flat_agent``) for GRPO / GiGPO: no planner.

One call = one task's group: N SAMPLED episodes (``himac.group_size``), run concurrently; ``himac_phase=
eval`` runs one greedy episode. Each turn is ReAct-style (``<think>`` + ``<action>``) from a prompt with
the task, the last ``flat_history_turns`` steps and the current observation. Samples follow the contract
with the convention ``role="flat"``, ``pass="micro"`` (they are the trained executions), ``blueprint_uid=""``
and ``subgoal_index=-1``; the episode ends on env done, at ``max_env_steps`` steps, or on a failure.
``<sub_done>`` means nothing here (the text goes to the env's projection like any other output).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from verl.experimental.agent_loop.agent_loop import AgentLoopOutput, register

from himac_verl.agent import pool_access
from himac_verl.agent.loop_base import (
    EnvAgentLoopBase,
    ServerError,
    phase_from_row,
    reset_in_session,
    step_env,
    task_from_row,
)
from himac_verl.agent.prompts import (
    HistoryEntry,
    format_admissible,
    format_history,
    format_moves,
    load_template,
    render,
)
from himac_verl.agent.samples import Episode, episode_outputs
from himac_verl.envs.base import ResetResult

logger = logging.getLogger(__name__)

NO_ACTION = "(no valid action)"


@register("flat_agent")
class FlatAgentLoop(EnvAgentLoopBase):
    async def run(self, sampling_params: dict[str, Any], **kwargs) -> list[AgentLoopOutput]:
        task = task_from_row(kwargs)
        settings = self.settings_for(task)
        phase = phase_from_row(kwargs, settings)
        is_eval = phase == "eval"
        params = self.turn_sampling(sampling_params, settings, is_greedy=is_eval)
        pool = self.pool_for(settings)
        call_uid = self.new_uid()
        global_steps = kwargs.get("global_steps")
        n = 1 if is_eval else settings.group_size
        template = load_template(settings.env_name, "flat", settings.template_version, settings.template_dir)

        async def one_episode(index: int) -> Episode | None:
            episode = Episode(task_uid=task.uid, episode_uid=f"{call_uid}/flat{index}", blueprint_uid="",
                              pass_="micro")

            async def body(env, reset: ResetResult) -> Episode:
                episode.task_type = reset.task_type
                obs, history, turns = reset.observation, [], 0
                while True:
                    if episode.env_steps >= settings.max_env_steps or turns >= settings.max_env_steps:
                        episode.flag_episode("step_limit")
                        return episode
                    turns += 1
                    step_no = episode.env_steps + 1
                    recent = history[len(history) - settings.flat_history_turns:] if settings.flat_history_turns else []

                    def prompt_text(n_hist: int, recent=recent, obs=obs, step_no=step_no) -> str:
                        shown = recent[len(recent) - n_hist:] if n_hist else []
                        return render(
                            template, instruction=reset.instruction,
                            history=format_history(shown, step_no - len(shown)), history_count=len(shown),
                            moves=format_moves(shown),
                            observation=obs.text, admissible=format_admissible(obs.admissible_actions),
                            step=step_no, max_steps=settings.max_env_steps, legend=reset.info.get("legend") or "")

                    try:
                        record = await self.generate_turn(
                            role="flat", turn=turns, subgoal_index=-1, observation=obs, render=prompt_text,
                            num_history=len(recent), sampling_params=params, settings=settings,
                            request_id=episode.episode_uid, row_global_steps=global_steps)
                    except ServerError as err:
                        logger.warning("episode %s: turn failed, episode ends: %s", episode.episode_uid, err)
                        episode.flag_episode("server_error")
                        return episode
                    episode.records.append(record)
                    action = pool_access.extract_action(record.text)
                    result = await step_env(env, action if action is not None else record.text, record, episode)
                    if result is None:
                        return episode
                    history.append(HistoryEntry(obs.text, action if action is not None else NO_ACTION))
                    obs = result.observation
                    if result.done:
                        episode.won = bool(result.won)
                        return episode

            return await reset_in_session(pool, task, body)

        episodes = await asyncio.gather(*(one_episode(i) for i in range(n)))
        outputs: list[AgentLoopOutput] = []
        for episode in episodes:
            if episode is not None:
                outputs.extend(episode_outputs(episode))
        if not outputs:
            logger.error("task %s: every episode of the call was dropped; the call returns no sample", task.uid)
        return outputs
