"""Turn records and episodes, and how they become verl ``AgentLoopOutput`` samples (the sample contract).

Every model turn is ONE output: the turn's own prompt ids, its response ids with ``response_mask`` all 1
(env text never sits in a response: it is in the next turn's prompt), the rollout log-probs, and in
``extra_fields`` exactly the contract fields (docs/credit.md) plus verl's global-step fields, the
``reward_extra_info`` verl requires whenever ``reward_score`` is set, and our diagnostics. Every output
of every call carries the same key set (TransferQueue takes the keys from the first output of a list).

``reward_score`` of a sample is its own episode's return (the planner's: its scoring episode's return).
verl's v1 worker then copies the LAST output's ``reward_score`` and ``reward_extra_info`` onto all earlier
outputs of the list (agent_loop_tq.py:172-175), so after verl the rm_scores describe only the call's last
episode: our estimators read ``extra_fields['episode_return']`` instead. In eval mode a call holds one
episode, so verl's validation score (the last output's) is exactly that episode's return and its
``reward_extra_info['acc']`` is the episode's success.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from verl.experimental.agent_loop.agent_loop import AgentLoopMetrics, AgentLoopOutput

from himac_verl.core.contract import CONTRACT_FIELDS, TurnSample

# Per-sample diagnostic flags; every output carries all of them. Per-turn flags describe the turn, per-
# episode flags (EPISODE_FLAGS) are set on every sample of the episode they describe.
FLAG_NAMES = (
    "parse_failure",  # planner: the blueprint did not parse (its episode was not executed)
    "selected",  # planner: this blueprint is the call's z* (the micro pass executed it)
    "invalid_action",  # the env judged this turn's action invalid (penalty applied), or it held none
    "sub_done",  # this turn's <sub_done> advanced the active subgoal
    "sub_done_refused",  # <sub_done> declared where it may not advance (no step on the subgoal yet, or last subgoal)
    "budget_forced",  # after this turn the subgoal advanced because its step budget was spent
    "truncated",  # the response hit the max-token limit without an end-of-sequence token
    "prompt_truncated",  # older history was dropped, or the prompt was cut, to fit prompt_length
    "env_failure",  # episode: ended by an EnvFailure (crash/timeout/error); return = rewards so far
    "server_error",  # episode: ended by a failed generate call; return = rewards so far
    "step_limit",  # episode: ended at the loop's env-step limit (max_env_steps), not by the env
)
EPISODE_FLAGS = ("env_failure", "server_error", "step_limit")
FAILURE_FLAGS = ("env_failure", "server_error")  # an episode ended by these is ``failed``: it never trains

DIAGNOSTIC_FIELDS = ("flags", "num_subgoals", "env_steps", "task_type", "env_score", "parse_error", "env_step",
                     "env_action")
VERL_FIELDS = ("min_global_steps", "max_global_steps", "reward_extra_info")
EXTRA_FIELD_KEYS = CONTRACT_FIELDS + VERL_FIELDS + DIAGNOSTIC_FIELDS


def new_flags(**set_flags: bool) -> dict[str, bool]:
    unknown = set(set_flags) - set(FLAG_NAMES)
    if unknown:
        raise KeyError(f"unknown sample flags {sorted(unknown)}; known: {FLAG_NAMES}")
    return {name: bool(set_flags.get(name, False)) for name in FLAG_NAMES}


@dataclass
class TurnRecord:
    """One model turn, before the episode's outcome is known."""

    role: str  # planner | executor | flat
    turn: int  # 0 for the planner, 1.. for executor/flat turns
    subgoal_index: int  # active subgoal (executor), -1 otherwise
    anchor: str  # canonical text of the env state the turn acted on
    prompt_ids: list[int]
    response_ids: list[int]
    response_logprobs: list[float] | None
    text: str  # decoded response
    min_global_steps: Any
    max_global_steps: Any
    image: Any = None  # PIL image sent with the prompt, if any
    step_reward: float = 0.0
    penalty: float = 0.0  # the invalid-action part of step_reward (<= 0)
    flags: dict[str, bool] = field(default_factory=new_flags)
    generate_s: float = 0.0
    env_s: float = 0.0
    # Whether this turn stepped the env (every turn does, except one whose step failed) and the legal
    # action the env executed (None when it judged the output invalid): the evaluation log's per-step view.
    env_step: bool = False
    env_action: str | None = None


@dataclass
class Episode:
    """One episode's samples and outcome (a planner-only episode when its blueprint did not parse)."""

    task_uid: str
    episode_uid: str
    blueprint_uid: str  # "" for flat episodes
    pass_: str  # macro | micro
    records: list[TurnRecord] = field(default_factory=list)
    episode_return: float = 0.0
    won: bool = False
    env_steps: int = 0
    num_subgoals: int = 0
    task_type: str = ""
    env_score: float | None = None
    parse_error: str = ""
    episode_flags: set[str] = field(default_factory=set)

    @property
    def failed(self) -> bool:
        """Ended by an env or server failure: its samples never train and join no group."""
        return bool(self.episode_flags & set(FAILURE_FLAGS))

    @property
    def episode_penalty(self) -> float:
        """Sum of the invalid-action penalties of the episode's turns (<= 0)."""
        return float(sum(rec.penalty for rec in self.records))

    def flag_episode(self, name: str) -> None:
        if name not in EPISODE_FLAGS:
            raise KeyError(f"{name!r} is not an episode flag ({EPISODE_FLAGS})")
        self.episode_flags.add(name)


def reward_extra_info(episode: Episode) -> dict[str, float]:
    """Numbers verl logs per data source in validation: ``acc`` (success) is its core metric there.

    ``score`` is the env's score where it gives one (WebShop score, Sokoban boxes on target), else success.
    """
    score = episode.env_score if episode.env_score is not None else float(episode.won)
    return {"acc": float(episode.won), "episode_return": float(episode.episode_return),
            "score": float(score), "env_steps": float(episode.env_steps)}


def episode_outputs(episode: Episode) -> list[AgentLoopOutput]:
    """The episode's turns as verl outputs carrying the sample contract (see module docstring)."""
    outputs = []
    info = reward_extra_info(episode)
    episode_penalty = episode.episode_penalty
    for rec in episode.records:
        flags = dict(rec.flags)
        for name in episode.episode_flags:
            flags[name] = True
        sample = TurnSample(
            role=rec.role, task_uid=episode.task_uid, blueprint_uid=episode.blueprint_uid,
            episode_uid=episode.episode_uid, pass_=episode.pass_, turn=int(rec.turn),
            subgoal_index=int(rec.subgoal_index), step_reward=float(rec.step_reward),
            episode_return=float(episode.episode_return), won=bool(episode.won), anchor=rec.anchor,
            penalty=float(rec.penalty), episode_penalty=episode_penalty, failed=episode.failed)
        extra = {
            **sample.to_extra_fields(),
            "min_global_steps": rec.min_global_steps,
            "max_global_steps": rec.max_global_steps,
            "reward_extra_info": dict(info),
            "flags": flags,
            "num_subgoals": int(episode.num_subgoals),
            "env_steps": int(episode.env_steps),
            "task_type": episode.task_type,
            "env_score": episode.env_score,
            "parse_error": episode.parse_error if rec.role == "planner" else "",
            "env_step": bool(rec.env_step),
            "env_action": rec.env_action,
        }
        assert tuple(extra) == EXTRA_FIELD_KEYS
        kwargs: dict[str, Any] = {}
        if rec.image is not None:
            kwargs["multi_modal_data"] = {"images": [rec.image]}
        outputs.append(AgentLoopOutput(
            prompt_ids=list(rec.prompt_ids),
            response_ids=list(rec.response_ids),
            response_mask=[1] * len(rec.response_ids),
            response_logprobs=list(rec.response_logprobs) if rec.response_logprobs is not None else None,
            reward_score=float(episode.episode_return),
            num_turns=2,
            metrics=AgentLoopMetrics(generate_sequences=rec.generate_s, tool_calls=rec.env_s),
            extra_fields=extra,
            **kwargs,
        ))
    return outputs
