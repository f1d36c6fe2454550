"""The HiMAC agent loop (registered as ``himac_agent``): one call = one task's whole group.

Phases (``himac_phase`` of the batch row, else ``himac.phase``):

- ``macro``: N blueprints are sampled (one planner turn each, from the task's first observation) and
  each is executed GREEDILY to score it. Planner samples and the scoring episodes' executor samples are
  tagged ``pass="macro"``; the executor ones never train.
- ``micro`` / ``joint``: the macro pass runs first, ``best_blueprint`` picks z*, then N SAMPLED executions
  under z* (``pass="micro"``). Which samples train is the trainer's business (micro: the micro pass's
  executor samples; joint: planner samples and micro executor samples); the loop always returns all.
- ``eval``: one greedy blueprint and one greedy execution (``pass="macro"``, group of one).

Executor turns (per episode, with the active subgoal k of K):

- prompt = task + blueprint + active subgoal + ONLY this subgoal's steps (the temporal mask) + the current
  observation (and admissible actions where the env lists them);
- the output's last ``<action>`` block is the action (``<sub_done>`` tags inside it are stripped); with no
  block the raw text (tags stripped) goes to the env, which judges it invalid unless it is a bare legal
  action;
- EVERY executor turn is one env step, charged by the env's rules: a turn without a legal action is an
  invalid step (-0.1 on top of the env's own step cost) and uses one step of ``max_env_steps``. So no turn
  is free: a ``<sub_done>``-only turn costs exactly what an invalid turn costs;
- ``<sub_done>`` (counted only outside ``<think>`` and ``<action>``, written after ``</action>``) advances to
  subgoal k+1 after this turn's step, but only where it may: the subgoal has seen an env step before this
  turn or this turn carries an action, and k is not the last subgoal. Elsewhere it is refused (flag
  ``sub_done_refused``) and the turn is an ordinary step;
- after ``subgoal_step_budget`` env steps on one subgoal the advance is forced (flag ``budget_forced``);
  with ``use_sub_done=false`` (ablation) ``<sub_done>`` is ignored and only the budget switches subgoals;
- the episode ends when the env says done, at ``max_env_steps`` env steps, or on an env/server failure
  (flagged ``failed``: its samples never train; return = rewards so far).

A blueprint that does not parse ends its episode at once with ``parse_failure_return``; the planner
sample is still returned (the planner must learn to write parsable plans). Episodes of a call run
concurrently; env calls go through the env pool.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import Any

from verl.experimental.agent_loop.agent_loop import AgentLoopOutput, register

from himac_verl.agent import pool_access
from himac_verl.agent.blueprint import (
    Blueprint,
    BlueprintCandidate,
    BlueprintParseError,
    best_blueprint,
    declares_sub_done,
    parse_planner_output,
    strip_sub_done,
)
from himac_verl.agent.config import LoopSettings
from himac_verl.agent.loop_base import (
    EnvAgentLoopBase,
    ServerError,
    observe_blueprint,
    phase_from_row,
    reset_in_session,
    step_env,
    task_from_row,
)
from himac_verl.agent.prompts import (
    HistoryEntry,
    executor_template,
    format_admissible,
    format_history,
    format_moves,
    load_template,
    render,
)
from himac_verl.agent.samples import Episode, episode_outputs
from himac_verl.envs.base import ResetResult, TaskSpec

logger = logging.getLogger(__name__)

NO_ACTION = "(no valid action)"


@dataclass
class _CallContext:
    task: TaskSpec
    settings: LoopSettings
    pool: Any
    call_uid: str
    global_steps: Any


@dataclass
class _MacroResult:
    episode: Episode
    blueprint: Blueprint | None
    index: int


@register("himac_agent")
class HiMACAgentLoop(EnvAgentLoopBase):
    async def run(self, sampling_params: dict[str, Any], **kwargs) -> list[AgentLoopOutput]:
        task = task_from_row(kwargs)
        settings = self.settings_for(task)
        phase = phase_from_row(kwargs, settings)
        if phase == "flat":
            raise ValueError("himac_phase='flat' is for flat_agent rows; himac_agent takes macro|micro|joint|eval")
        ctx = _CallContext(task, settings, self.pool_for(settings), self.new_uid(), kwargs.get("global_steps"))
        is_eval = phase == "eval"
        n = 1 if is_eval else settings.group_size
        planner_params = self.turn_sampling(sampling_params, settings, is_greedy=is_eval)
        scoring_params = self.turn_sampling(sampling_params, settings, is_greedy=True)

        macro = await asyncio.gather(*(self._macro_episode(ctx, i, planner_params, scoring_params)
                                       for i in range(n)))
        macro = [m for m in macro if m is not None]
        episodes = [m.episode for m in macro]

        if phase in ("micro", "joint"):
            star = self._select(ctx, macro)
            if star is None:
                logger.warning("task %s: no blueprint parsed and scored cleanly in the macro pass; "
                               "the micro pass is skipped for this call", task.uid)
            else:
                chosen = next(m for m in macro if m.index == star.index)
                chosen.episode.records[0].flags["selected"] = True
                micro_params = self.turn_sampling(sampling_params, settings, is_greedy=False)
                micro = await asyncio.gather(*(
                    self._micro_episode(ctx, j, chosen, micro_params) for j in range(settings.group_size)))
                episodes += [e for e in micro if e is not None]

        outputs: list[AgentLoopOutput] = []
        for episode in episodes:
            outputs.extend(episode_outputs(episode))
        if not outputs:
            logger.error("task %s: every episode of the call was dropped (env resets or planner calls "
                         "failed); the call returns no sample", task.uid)
        return outputs

    # ---- z* -------------------------------------------------------------------------------------------
    @staticmethod
    def _select(ctx: _CallContext, macro: list[_MacroResult]) -> BlueprintCandidate | None:
        candidates = [
            BlueprintCandidate(m.index, m.blueprint, m.episode.episode_return, m.episode.won, m.episode.env_steps)
            for m in macro
            if m.blueprint is not None and not (m.episode.episode_flags & {"env_failure", "server_error"})
        ]
        rng = None
        if ctx.settings.blueprint_selection == "random":
            rng = random.Random(f"{ctx.settings.seed}|{ctx.task.uid}|{ctx.global_steps}")
        return best_blueprint(candidates, ctx.settings.blueprint_selection, rng)

    # ---- episodes ---------------------------------------------------------------------------------------
    async def _macro_episode(self, ctx: _CallContext, index: int, planner_params, scoring_params):
        episode = Episode(task_uid=ctx.task.uid, episode_uid=f"{ctx.call_uid}/macro{index}",
                          blueprint_uid=f"{ctx.call_uid}/bp{index}", pass_="macro")

        async def body(env, reset: ResetResult) -> _MacroResult | None:
            episode.task_type = reset.task_type
            obs = reset.observation
            settings = ctx.settings
            text = render(
                load_template(settings.env_name, "planner", settings.template_version, settings.template_dir),
                instruction=reset.instruction, observation=obs.text,
                admissible=format_admissible(obs.admissible_actions), max_subgoals=settings.max_subgoals,
                max_steps=settings.max_env_steps, legend=reset.info.get("legend") or "", step=1)
            try:
                record = await self.generate_turn(
                    role="planner", turn=0, subgoal_index=-1, observation=obs, render=lambda k: text,
                    num_history=0, sampling_params=planner_params, settings=settings,
                    request_id=episode.episode_uid, row_global_steps=ctx.global_steps)
            except ServerError as err:
                logger.warning("task %s: planner turn failed, episode dropped: %s", ctx.task.uid, err)
                return None
            episode.records.append(record)
            try:  # off the event loop: other episodes of this worker keep going while it parses
                blueprint = await self.loop.run_in_executor(
                    None, parse_planner_output, record.text, record.response_ids, settings)
            except BlueprintParseError as err:
                record.flags["parse_failure"] = True
                episode.parse_error = err.reason
                episode.episode_return = settings.parse_failure_return
                return _MacroResult(episode, None, index)
            episode.num_subgoals = blueprint.num_subgoals
            await self._execute(env, reset, blueprint, episode, ctx, scoring_params)
            return _MacroResult(episode, blueprint, index)

        return await reset_in_session(ctx.pool, ctx.task, body)

    async def _micro_episode(self, ctx: _CallContext, index: int, chosen: _MacroResult, params):
        episode = Episode(task_uid=ctx.task.uid, episode_uid=f"{ctx.call_uid}/micro{index}",
                          blueprint_uid=chosen.episode.blueprint_uid, pass_="micro",
                          num_subgoals=chosen.blueprint.num_subgoals)

        async def body(env, reset: ResetResult) -> Episode:
            episode.task_type = reset.task_type
            await self._execute(env, reset, chosen.blueprint, episode, ctx, params)
            return episode

        return await reset_in_session(ctx.pool, ctx.task, body)

    async def _execute(self, env, reset: ResetResult, blueprint: Blueprint, episode: Episode,
                       ctx: _CallContext, params: dict[str, Any]) -> None:
        """Executor turns until the episode ends (see the module docstring for the rules)."""
        settings = ctx.settings
        if not await observe_blueprint(env, blueprint.subgoals, episode):
            return
        template = executor_template(settings.env_name, settings.use_sub_done, settings.template_version,
                                     settings.template_dir)
        last = blueprint.num_subgoals - 1
        obs = reset.observation
        k, segment, steps_on_subgoal, turns = 0, [], 0, 0
        while True:
            if episode.env_steps >= settings.max_env_steps:
                episode.flag_episode("step_limit")
                return
            turns += 1
            step_no = episode.env_steps + 1

            def prompt_text(n_hist: int, k=k, segment=segment, obs=obs, step_no=step_no) -> str:
                shown = segment[len(segment) - n_hist:] if n_hist else []
                return render(
                    template, instruction=reset.instruction, blueprint=blueprint.render(),
                    subgoal_number=k + 1, num_subgoals=blueprint.num_subgoals, subgoal=blueprint.subgoals[k],
                    history=format_history(shown, step_no - len(shown)), history_count=len(shown),
                    moves=format_moves(shown),
                    observation=obs.text, admissible=format_admissible(obs.admissible_actions),
                    step=step_no, max_steps=settings.max_env_steps, legend=reset.info.get("legend") or "")

            try:
                record = await self.generate_turn(
                    role="executor", turn=turns, subgoal_index=k, observation=obs, render=prompt_text,
                    num_history=len(segment), sampling_params=params, settings=settings,
                    request_id=episode.episode_uid, row_global_steps=ctx.global_steps)
            except ServerError as err:
                logger.warning("episode %s: executor turn failed, episode ends: %s", episode.episode_uid, err)
                episode.flag_episode("server_error")
                return
            episode.records.append(record)
            action = pool_access.extract_action(record.text)
            if action is not None:
                action = strip_sub_done(action) or None
            declared = settings.use_sub_done and declares_sub_done(record.text)
            may_advance = k < last and (steps_on_subgoal >= 1 or action is not None)
            result = await step_env(env, action if action is not None else strip_sub_done(record.text),
                                    record, episode)
            if result is None:
                return  # env failure, flagged by step_env
            segment.append(HistoryEntry(obs.text, action if action is not None else NO_ACTION))
            steps_on_subgoal += 1
            obs = result.observation
            if result.done:
                episode.won = bool(result.won)
                return
            if declared and may_advance:
                record.flags["sub_done"] = True
            elif k < last and steps_on_subgoal >= settings.subgoal_step_budget:
                record.flags["budget_forced"] = True
                record.flags["sub_done_refused"] = declared
            else:
                record.flags["sub_done_refused"] = declared
                continue
            k, segment, steps_on_subgoal = k + 1, [], 0
