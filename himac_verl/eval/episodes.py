"""Evaluation episodes from the agent loop's samples: the bridge between verl's validation and our log.

An evaluation call (``himac_phase="eval"``) returns one greedy episode as a list of turn samples (the
sample contract, docs/advantage.md "Contract fields read here"); verl stores them in TransferQueue under the ``val`` partition.
:func:`episode_records` groups those samples by ``episode_uid`` and rebuilds one
:class:`~himac_verl.eval.episode_log.EpisodeRecord` per episode; :class:`ValidationEpisodeLog` is the
trainer-side hook that reads a validation batch from TransferQueue and appends the records to the log.

What the log holds, and where it differs from the loop's own numbers (on purpose):

- ``actions`` / ``rewards``: one entry per turn that stepped the env (``env_step``), in turn order:
  the legal action the env executed (None when it judged the output invalid) and the step's reward;
- ``episode_return`` = sum(rewards), the env's view. The loop's return differs in one case: a blueprint
  that does not parse ends the episode before any env step with ``himac.agent.parse_failure_return``
  (a training signal for the planner, not something the env gave). The log keeps the env's 0 (no steps),
  flags the episode ``parse_failure`` and keeps the loop's figure under ``extra.loop_return``, so
  ``episode_return == sum(rewards)`` holds for every record;
- ``score`` (WebShop, Sokoban): the env's last score; an episode without any env step has 0.0 (nothing
  bought, no box moved);
- ``blueprint``: the planner's subgoals, parsed again from its response with the run's settings (the
  same pure parser the loop used); ``[]`` when it did not parse; None for flat episodes;
- ``flags``: the anomalies (``parse_failure``, ``env_failure``, ``server_error``); how the episode ended
  and per-turn counts (invalid actions, truncated turns, ``<sub_done>`` advances...) go under ``extra``.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from himac_verl.eval.episode_log import SCORED_ENVS, EpisodeLogWriter, EpisodeRecord

logger = logging.getLogger(__name__)

# sample flags that make an episode "flagged" in the tables (anomalies), and those only counted in extra
ANOMALY_FLAGS = ("parse_failure", "env_failure", "server_error")
COUNTED_FLAGS = ("invalid_action", "sub_done", "budget_forced", "truncated", "prompt_truncated")
NO_EPISODE_FLAG = "no_episode"  # the task's call returned no sample (reset failed twice, or it raised)


@dataclass(frozen=True)
class RunInfo:
    """What an episode's samples do not say: how the run was made."""

    method: str  # himac | flat (or a baseline's name)
    model: str  # as the user named it (tiny, smollm2, a path)
    seed: int  # task-selection seed of the evaluation


@dataclass(frozen=True)
class Sample:
    """One turn sample as the log needs it: its ``extra_fields`` and its response."""

    extra: dict[str, Any]
    response_ids: list[int]
    response_text: str


def split_task_uid(task_uid: str) -> tuple[str, str, str]:
    """``"alfworld/valid_seen/pick_.../trial_T..."`` -> (env, split, task_id); the task id may hold '/'."""
    parts = task_uid.split("/", 2)
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"task_uid {task_uid!r}: expected 'env/split/task_id'")
    return parts[0], parts[1], parts[2]


def _parse_blueprint(planner: Sample, env: str, settings_for: Callable[[str], Any]) -> list[str]:
    from himac_verl.agent.blueprint import BlueprintParseError, parse_planner_output

    try:
        return list(parse_planner_output(planner.response_text, planner.response_ids, settings_for(env)).subgoals)
    except BlueprintParseError:
        return []


def episode_record(samples: Sequence[Sample], run: RunInfo, settings_for: Callable[[str], Any]) -> EpisodeRecord:
    """One episode's record from all its samples (any order; they must share ``episode_uid``).

    ``settings_for(env)`` gives the loop settings (``LoopSettings.from_config``) used to re-parse the
    planner's blueprint.
    """
    if not samples:
        raise ValueError("an episode needs at least one sample")
    uids = {s.extra["episode_uid"] for s in samples}
    if len(uids) != 1:
        raise ValueError(f"samples of several episodes given together: {sorted(uids)}")
    turns = sorted(samples, key=lambda s: int(s.extra["turn"]))
    first = turns[0].extra
    env, split, task_id = split_task_uid(str(first["task_uid"]))
    roles = {s.extra["role"] for s in turns}
    planner = next((s for s in turns if s.extra["role"] == "planner"), None)
    flat = roles == {"flat"}

    stepped = [s for s in turns if s.extra.get("env_step")]
    actions = [s.extra.get("env_action") for s in stepped]
    rewards = [float(s.extra["step_reward"]) for s in stepped]
    tokens: dict[str, int] = defaultdict(int)
    counts: dict[str, int] = defaultdict(int)
    flags: set[str] = set()
    for s in turns:
        tokens[s.extra["role"]] += len(s.response_ids)
        for name, value in (s.extra.get("flags") or {}).items():
            if value and name in ANOMALY_FLAGS:
                flags.add(name)
            if value and name in COUNTED_FLAGS:
                counts[name] += 1
    turn_flags = turns[-1].extra.get("flags") or {}
    ended_by = next((f for f in ("env_failure", "server_error", "step_limit", "parse_failure") if turn_flags.get(f)),
                    "env" if stepped else "no_step")

    score = first.get("env_score")
    if env in SCORED_ENVS and score is None:
        if stepped:  # the env stepped but gave no score: say so rather than invent one silently
            flags.add("no_env_score")
        score = 0.0
    elif env not in SCORED_ENVS:
        score = None

    extra: dict[str, Any] = {
        "episode_uid": first["episode_uid"],
        "ended_by": ended_by,
        "turns": len(turns),
        "model_actions": [_model_action(s.response_text) for s in stepped],
        **{f"num_{name}": counts[name] for name in COUNTED_FLAGS},
    }
    loop_return = float(first["episode_return"])
    if abs(loop_return - sum(rewards)) > 1e-6:
        extra["loop_return"] = loop_return
    if planner is not None:
        extra["planner_output"] = planner.response_text
        if first.get("parse_error") or planner.extra.get("parse_error"):
            extra["parse_error"] = planner.extra.get("parse_error")
    return EpisodeRecord.build(
        env=env, split=split, task_id=task_id, task_type=str(first.get("task_type") or env),
        method=run.method, model=run.model, seed=run.seed,
        blueprint=None if flat or planner is None else _parse_blueprint(planner, env, settings_for),
        actions=actions, rewards=rewards, won=bool(first["won"]), score=score,
        tokens=dict(tokens), flags=sorted(flags), extra=extra,
    )


def _model_action(text: str) -> str | None:
    """The action the model wrote (its last ``<action>`` block), before the env's projection."""
    from himac_verl.agent.pool_access import extract_action

    return extract_action(text)


def episode_records(samples: Sequence[Sample], run: RunInfo, settings_for: Callable[[str], Any]) -> list[EpisodeRecord]:
    """Records of every episode among ``samples`` (grouped by ``episode_uid``, first-seen order)."""
    groups: dict[str, list[Sample]] = {}
    for s in samples:
        groups.setdefault(str(s.extra["episode_uid"]), []).append(s)
    return [episode_record(group, run, settings_for) for group in groups.values()]


def missing_task_record(task_uid: str, task_type: str, run: RunInfo) -> EpisodeRecord:
    """A failed, flagged record for a task whose call produced no episode: it stays in the denominators
    (a lost episode is a failure, not a missing game; tables.py)."""
    env, split, task_id = split_task_uid(task_uid)
    return EpisodeRecord.build(
        env=env, split=split, task_id=task_id, task_type=task_type, method=run.method, model=run.model,
        seed=run.seed, blueprint=None, actions=[], rewards=[], won=False,
        score=0.0 if env in SCORED_ENVS else None, flags=[NO_EPISODE_FLAG],
        extra={"ended_by": NO_EPISODE_FLAG},
    )


class ValidationEpisodeLog:
    """The trainer's validation hook: each validation batch's samples -> records appended to ``path``.

    Reads ``responses`` and ``extra_fields`` of every sample of the batch from TransferQueue (verl's
    ``_validate`` keeps only each call's last output for its metrics and clears the rest afterwards).
    """

    def __init__(self, path: str | os.PathLike, run: RunInfo, config: Any, tokenizer: Any):
        from himac_verl.agent.config import LoopSettings

        self.path = Path(path)
        self.run = run
        self.tokenizer = tokenizer
        self._settings: dict[str, Any] = {}
        self._config = config
        self._settings_cls = LoopSettings
        self.episodes = 0
        self.step: int | None = None  # the trainer's global step of the validation (extra["global_step"])

    def settings_for(self, env: str):
        if env not in self._settings:
            self._settings[env] = self._settings_cls.from_config(self._config, env)
        return self._settings[env]

    def log_batch(self, batch) -> int:
        """Append the records of a sampled ``val`` batch (a ``KVBatchMeta``); returns how many."""
        import transfer_queue as tq

        if not batch.keys:
            return 0
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id,
                               select_fields=["responses", "extra_fields"])
        extra = data["extra_fields"]
        extra = list(extra.tolist() if hasattr(extra, "tolist") else extra)
        responses = [row.tolist() for row in data["responses"].unbind()]
        texts = self.tokenizer.batch_decode(responses, skip_special_tokens=True)
        samples = [Sample(e, r, t) for e, r, t in zip(extra, responses, texts, strict=True)]
        records = episode_records(samples, self.run, self.settings_for)
        if self.step is not None:
            for record in records:
                record.extra["global_step"] = int(self.step)
        with EpisodeLogWriter(self.path, mode="a") as log:
            for record in records:
                log.write(record)
        self.episodes += len(records)
        logger.info("episode log %s: +%d episodes (%d in total)", self.path, len(records), self.episodes)
        return len(records)

    @staticmethod
    def from_config(config: Any, tokenizer: Any) -> ValidationEpisodeLog | None:
        """The hook for ``himac.eval_log_file`` (None when unset); run facts from ``himac.eval_run``."""
        from omegaconf import OmegaConf

        path = OmegaConf.select(config, "himac.eval_log_file", default=None)
        if not path:
            return None
        if not os.path.isabs(str(path)):
            raise ValueError(f"himac.eval_log_file={path!r}: give an absolute path (the trainer runs in a Ray "
                             "process whose working directory is not yours)")
        run_cfg = OmegaConf.select(config, "himac.eval_run", default=None) or {}
        mode = OmegaConf.select(config, "himac.schedule.mode", default="coevolve")
        method = str(run_cfg.get("method") or ("flat" if mode == "flat" else "himac"))
        model = str(run_cfg.get("model") or config.actor_rollout_ref.model.path)
        seed = run_cfg.get("seed")
        seed = int(seed if seed is not None else (OmegaConf.select(config, "himac.data.seed", default=0) or 0))
        return ValidationEpisodeLog(path, RunInfo(method, model, seed), config, tokenizer)
