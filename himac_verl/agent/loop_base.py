"""What the HiMAC and flat loops share: reading the batch row, sampling settings, building a turn's
prompt within ``rollout.prompt_length``, one generate call, and the per-episode failure outcomes.

Each model turn is generated from a FRESH prompt (task + the history the role may see + the current
observation), not by appending to a running conversation: the executor's temporal mask shows only the
active subgoal's segment, and the flat loop shows the last k turns. So a turn's prompt is rendered with
verl's Continuous Token builder's ``build_initial_tokens`` (the chat template, or the processor when the
model takes images), and its sample is exactly (that prompt, that response).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from verl.experimental.agent_loop.agent_loop import AgentLoopBase

from himac_verl.agent import pool_access
from himac_verl.agent.config import ENV_COLUMN, PHASE_COLUMN, PHASES, SPLIT_COLUMN, TASK_COLUMN, LoopSettings
from himac_verl.agent.samples import TurnRecord, new_flags
from himac_verl.envs.base import Observation, TaskSpec

logger = logging.getLogger(__name__)


class ServerError(RuntimeError):
    """A generate call failed or returned something unusable; ends the episode (flagged), never the call."""


def _scalar(value: Any) -> Any:
    """Row values arrive as Python objects or 0-d numpy objects depending on verl's path."""
    return value.item() if hasattr(value, "item") and getattr(value, "ndim", 1) == 0 else value


def task_from_row(kwargs: dict[str, Any]) -> TaskSpec:
    missing = [c for c in (ENV_COLUMN, SPLIT_COLUMN, TASK_COLUMN) if kwargs.get(c) is None]
    if missing:
        raise ValueError(f"dataset row lacks column(s) {missing} (build rows with "
                         f"himac_verl.agent.rows.task_rows); row keys: {sorted(kwargs)}")
    return TaskSpec(str(_scalar(kwargs[ENV_COLUMN])), str(_scalar(kwargs[SPLIT_COLUMN])),
                    str(_scalar(kwargs[TASK_COLUMN])))


def phase_from_row(kwargs: dict[str, Any], settings: LoopSettings) -> str:
    """The phase the trainer put in the batch (``himac_phase``), else ``himac.phase``; never inferred."""
    value = kwargs.get(PHASE_COLUMN)
    phase = settings.default_phase if value is None else str(_scalar(value))
    if phase not in PHASES:
        raise ValueError(f"{PHASE_COLUMN}={phase!r} is not one of {PHASES}")
    return phase


def greedy(sampling_params: dict[str, Any]) -> dict[str, Any]:
    """Greedy decoding with verl's own convention (agent_loop_tq.apply_greedy_sampling_params)."""
    return {**sampling_params, "temperature": 0.0, "top_p": 1.0, "top_k": -1}


@dataclass
class PromptBuild:
    prompt_ids: list[int]
    history_kept: int
    truncated: bool  # history dropped or prompt cut


class EnvAgentLoopBase(AgentLoopBase):
    """Shared machinery; subclasses implement ``run``."""

    _warned_global_steps = False

    def __init__(self, *args, **kwargs):
        kwargs.pop("tools", None)  # verl passes its tool list to every loop; env loops use none
        super().__init__(*args, **kwargs)
        eos = self.tokenizer.eos_token_id
        self._eos_ids = {eos} if isinstance(eos, int) else set(eos or [])

    # ---- per call -----------------------------------------------------------------------------------
    def settings_for(self, task: TaskSpec) -> LoopSettings:
        return LoopSettings.from_config(self.config, task.env)

    def pool_for(self, settings: LoopSettings):
        return pool_access.get_pool(settings.env_name, settings.env_kwargs, **settings.pool_kwargs)

    def turn_sampling(self, sampling_params: dict[str, Any], settings: LoopSettings, is_greedy: bool):
        params = {**sampling_params, "max_tokens": settings.response_length}
        return greedy(params) if is_greedy else params

    @staticmethod
    def new_uid() -> str:
        return uuid.uuid4().hex[:12]

    # ---- one turn -----------------------------------------------------------------------------------
    def _messages(self, text: str, image: Any) -> list[dict[str, Any]]:
        if image is None:
            return [{"role": "user", "content": text}]
        return [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": text}]}]

    async def _tokenize(self, text: str, image: Any) -> list[int]:
        messages = self._messages(text, image)
        images = [image] if image is not None else None
        return await self.loop.run_in_executor(
            None, lambda: self.continuous_token_builder.build_initial_tokens(messages, images=images))

    async def build_prompt(self, render: Callable[[int], str], num_history: int, image: Any,
                           prompt_length: int) -> PromptBuild:
        """Prompt ids for ``render(k)`` (the prompt text showing the last k history entries) within
        ``prompt_length``: keep as much recent history as fits (older entries are dropped first); if the
        prompt does not fit even without history, text prompts are left-cut (verl's rule) and image
        prompts raise (cutting would misalign image placeholders; verl raises too)."""
        self._assert_mm_supported(image is not None)
        ids = await self._tokenize(render(num_history), image)
        if len(ids) <= prompt_length:
            return PromptBuild(ids, num_history, False)
        lo, hi, best = 0, num_history - 1, None  # largest k in [0, num_history) that fits
        while lo <= hi:
            mid = (lo + hi) // 2
            cand = await self._tokenize(render(mid), image)
            if len(cand) <= prompt_length:
                best, lo = (cand, mid), mid + 1
            else:
                hi = mid - 1
        if best is not None:
            return PromptBuild(best[0], best[1], True)
        if num_history:
            ids = await self._tokenize(render(0), image)
        if image is not None:
            raise ValueError(f"image prompt of {len(ids)} tokens exceeds actor_rollout_ref.rollout.prompt_length="
                             f"{prompt_length} even without history; raise prompt_length or shrink the image")
        logger.warning("prompt of %d tokens exceeds prompt_length=%d without history; left-cutting",
                       len(ids), prompt_length)
        return PromptBuild(ids[-prompt_length:], 0, True)

    async def generate_turn(
        self,
        *,
        role: str,
        turn: int,
        subgoal_index: int,
        observation: Observation,
        render: Callable[[int], str],
        num_history: int,
        sampling_params: dict[str, Any],
        settings: LoopSettings,
        request_id: str,
        row_global_steps: Any = None,
    ) -> TurnRecord:
        """Build the prompt (``render(k)`` = the prompt text with the last k of ``num_history`` entries),
        generate, and return the turn's record.

        Raises ServerError when the call fails or its answer is unusable (aborted, empty, log-probs missing
        though requested).
        """
        image = _to_pil(observation.image) if observation.image is not None else None
        built = await self.build_prompt(render, num_history, image, settings.prompt_length)
        t0 = time.perf_counter()
        try:
            out = await self.server_manager.generate(
                request_id=request_id,
                prompt_ids=built.prompt_ids,
                sampling_params=dict(sampling_params),
                image_data=[image] if image is not None else None,
            )
        except asyncio.CancelledError:
            raise
        except Exception as err:  # noqa: BLE001 - any server failure ends this episode only
            raise ServerError(f"generate failed: {type(err).__name__}: {err}") from err
        elapsed = time.perf_counter() - t0
        if out.stop_reason == "aborted" or not out.token_ids:
            raise ServerError(f"generate returned no tokens (stop_reason={out.stop_reason!r})")
        want_logprobs = bool(sampling_params.get("logprobs"))
        if want_logprobs and (out.log_probs is None or len(out.log_probs) != len(out.token_ids)):
            raise ServerError(f"log-probs requested but got {None if out.log_probs is None else len(out.log_probs)}"
                              f" for {len(out.token_ids)} tokens")
        max_tokens = min(int(sampling_params.get("max_tokens", settings.response_length)), settings.response_length)
        response_ids = list(out.token_ids)[:settings.response_length]
        logprobs = list(out.log_probs)[:settings.response_length] if want_logprobs else None
        truncated = len(out.token_ids) > settings.response_length or (
            len(response_ids) >= max_tokens and response_ids[-1] not in self._eos_ids)
        text = self.tokenizer.decode(response_ids, skip_special_tokens=True)
        extra = out.extra_fields or {}
        gs = extra.get("global_steps")
        if gs is None and extra.get("min_global_steps") is None:
            # verl's LLMServerClient derives these from the server's stamp; a server that does not stamp
            # would make the v1 trainer fail on None, so fall back to the batch's step, loudly.
            if not EnvAgentLoopBase._warned_global_steps:
                logger.warning("rollout server output has no global_steps stamp; using the batch's "
                               "global_steps=%r for min/max_global_steps", row_global_steps)
                EnvAgentLoopBase._warned_global_steps = True
            gs = _scalar(row_global_steps)
        record = TurnRecord(
            role=role, turn=turn, subgoal_index=subgoal_index, anchor=observation.anchor,
            prompt_ids=built.prompt_ids, response_ids=response_ids, response_logprobs=logprobs, text=text,
            min_global_steps=extra.get("min_global_steps", gs), max_global_steps=extra.get("max_global_steps", gs),
            image=image, flags=new_flags(truncated=truncated, prompt_truncated=built.truncated),
            generate_s=elapsed,
        )
        return record


def _to_pil(image: Any) -> Any:
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    return Image.fromarray(image).convert("RGB")


async def reset_in_session(pool, task: TaskSpec, body, attempts: int = 2):
    """Open a pool session, reset ``task`` and run ``body(env, reset_result)`` in that session.

    A reset that raises EnvFailure is retried once in a new session (the pool has replaced the
    instance); after that the episode is dropped (no prompt exists to make a sample from) and logged at
    ERROR, returning None. Other exceptions (a bad task id, say) propagate: they are the batch's error.
    """
    env_failure = pool_access.env_failure_type()
    for attempt in range(1, attempts + 1):
        async with pool.session() as env:
            try:
                reset = await env.reset(task)
            except env_failure as err:
                logger.warning("reset of %s failed (attempt %d/%d): %s", task.uid, attempt, attempts, err)
                continue
            return await body(env, reset)
    logger.error("reset of %s failed %d times; this episode is dropped from the call", task.uid, attempts)
    return None


async def observe_blueprint(env, subgoals: tuple[str, ...], episode) -> bool:
    """Show the env the blueprint the episode executes; False when the env failed (episode flagged)."""
    try:
        await env.observe_blueprint(subgoals)
    except pool_access.env_failure_type() as err:
        logger.warning("env failure in episode %s: %s", episode.episode_uid, err)
        episode.flag_episode("env_failure")
        return False
    return True


async def step_env(env, action: str, record: TurnRecord, episode) -> Any:
    """One env step for a turn: updates the record and episode; returns the StepResult, or None when the
    env failed (the episode is then flagged ``env_failure`` and must end)."""
    env_failure = pool_access.env_failure_type()
    t0 = time.perf_counter()
    try:
        result = await env.step(action)
    except env_failure as err:
        record.env_s = time.perf_counter() - t0
        logger.warning("env failure in episode %s: %s", episode.episode_uid, err)
        episode.flag_episode("env_failure")
        return None
    record.env_s = time.perf_counter() - t0
    record.step_reward = float(result.reward)
    record.penalty = float(result.penalty)
    record.flags["invalid_action"] = not result.is_action_valid
    record.env_step, record.env_action = True, result.action
    episode.episode_return += float(result.reward)
    episode.env_steps += 1
    if result.score is not None:
        episode.env_score = float(result.score)
    return result
