"""Per-episode evaluation logs: one JSON object per line, one episode per object.

The log is the only thing the tables read, so it is validated strictly when it is read back: a wrong
type, a missing or unknown field, or numbers that disagree with each other (``num_steps`` against
``actions``, ``episode_return`` against ``rewards``) raise :class:`EpisodeLogError` naming the file, the
line and the field. A silently skipped line would change a success rate without anyone noticing.

Schema (``schema_version`` 1; every field is required unless marked optional)::

    schema_version  int, optional, == 1
    env             str     "alfworld" | "webshop" | "sokoban" | any other non-empty name
    split           str     "valid_seen", "valid_unseen", "test", ...
    task_id         str     game folder / goal index / seed, as in envs.base.TaskSpec
    task_uid        str     must equal f"{env}/{split}/{task_id}" (TaskSpec.uid)
    task_type       str     ALFWorld: Pick|Look|Clean|Heat|Cool|Pick2; else free (e.g. "webshop")
    method          str     "himac", "grpo", "gigpo", ...
    model           str     model name or path
    seed            int     the evaluation seed
    blueprint       list[str] | null   the planner's subgoals (null for flat methods)
    actions         list[str | null]   one per env step (null: the output held no action)
    rewards         list[float]        one per env step, invalid-action penalty included
    episode_return  float   == sum(rewards) (within 1e-6 relative)
    won             bool
    score           float in [0, 1] | null   required for webshop (score) and sokoban (boxes on
                                              targets); must be null for alfworld
    num_steps       int     == len(actions) == len(rewards)
    tokens          {"planner": int, "executor": int, "flat": int}   generated tokens by role
    flags           list[str]   e.g. "env_restarted", "timeout"; empty for clean episodes
    extra           dict, optional   anything else (kept, never read by the tables)
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import IO, Any

from himac_verl.core.contract import ROLES
from himac_verl.envs.alfworld.data import TASK_TYPES as ALFWORLD_TASK_TYPE_TABLE

SCHEMA_VERSION = 1

ALFWORLD_TASK_TYPES: tuple[str, ...] = ("Pick", "Look", "Clean", "Heat", "Cool", "Pick2")
# ALFWorld game folders are named "<task_type>-Object-Recep-Parent-scene"; their prefix gives the column
# (one table for the env and the eval: himac_verl.envs.alfworld.data.TASK_TYPES).
ALFWORLD_FOLDER_TO_TYPE: dict[str, str] = ALFWORLD_TASK_TYPE_TABLE
# Envs whose ``score`` must be present (their tables have a score column).
SCORED_ENVS: frozenset[str] = frozenset({"webshop", "sokoban"})


class EpisodeLogError(ValueError):
    """A log line that does not follow the schema; the message names file, line and field."""


def alfworld_task_type(game: str) -> str:
    """The paper's column for an ALFWorld game folder name or path.

    ``"valid_seen/pick_two_obj_and_place-Watch-None-Dresser-313/trial_T2019..."`` -> ``"Pick2"``.
    """
    for part in reversed(Path(game).parts):
        prefix = part.split("-", 1)[0]
        if prefix in ALFWORLD_FOLDER_TO_TYPE:
            return ALFWORLD_FOLDER_TO_TYPE[prefix]
    raise ValueError(f"game {game!r}: no folder starts with one of {sorted(ALFWORLD_FOLDER_TO_TYPE)}")


@dataclass
class EpisodeRecord:
    """One evaluated episode (see the module docstring for the field contract)."""

    env: str
    split: str
    task_id: str
    task_uid: str
    task_type: str
    method: str
    model: str
    seed: int
    blueprint: list[str] | None
    actions: list[str | None]
    rewards: list[float]
    episode_return: float
    won: bool
    score: float | None
    num_steps: int
    tokens: dict[str, int]
    flags: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_record(self.as_dict())

    def as_dict(self) -> dict[str, Any]:
        """Field name -> value, shallow (``dataclasses.asdict`` deep-copies every list: 5x slower)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to_json(self) -> str:
        data = {"schema_version": SCHEMA_VERSION, **self.as_dict()}
        return json.dumps(data, ensure_ascii=False, allow_nan=False)

    @classmethod
    def build(
        cls,
        *,
        env: str,
        split: str,
        task_id: str,
        task_type: str,
        method: str,
        model: str,
        seed: int,
        actions: list[str | None],
        rewards: list[float],
        won: bool,
        score: float | None = None,
        blueprint: list[str] | None = None,
        tokens: dict[str, int] | None = None,
        flags: list[str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> EpisodeRecord:
        """A record with the derived fields filled in: task_uid, episode_return = sum(rewards),
        num_steps = len(actions); tokens default to 0 per role."""
        return cls(
            env=env,
            split=split,
            task_id=task_id,
            task_uid=f"{env}/{split}/{task_id}",
            task_type=task_type,
            method=method,
            model=model,
            seed=seed,
            blueprint=blueprint,
            actions=list(actions),
            rewards=[float(r) for r in rewards],
            episode_return=math.fsum(rewards),
            won=won,
            score=score,
            num_steps=len(actions),
            tokens={role: 0 for role in ROLES} | (tokens or {}),
            flags=list(flags or []),
            extra=dict(extra or {}),
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EpisodeRecord:
        """Validate ``data`` (one decoded line) and build the record; raises EpisodeLogError."""
        validate_record(data)
        fields = {k: v for k, v in data.items() if k != "schema_version"}
        fields["rewards"] = [float(r) for r in fields["rewards"]]
        fields["episode_return"] = float(fields["episode_return"])
        if fields["score"] is not None:
            fields["score"] = float(fields["score"])
        return cls(**fields)


_REQUIRED = (
    "env", "split", "task_id", "task_uid", "task_type", "method", "model", "seed", "blueprint", "actions",
    "rewards", "episode_return", "won", "score", "num_steps", "tokens", "flags",
)  # fmt: skip
_OPTIONAL = ("schema_version", "extra")


def _fail(name: str, message: str) -> EpisodeLogError:
    return EpisodeLogError(f"field {name!r}: {message}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_str(data: dict[str, Any], name: str) -> None:
    value = data[name]
    if not isinstance(value, str) or not value.strip():
        raise _fail(name, f"expected a non-empty string, got {value!r}")


def _check_finite(name: str, value: Any) -> None:
    if not _is_number(value) or not math.isfinite(value):
        raise _fail(name, f"expected a finite number, got {value!r}")


def validate_record(data: dict[str, Any]) -> None:
    """Raise :class:`EpisodeLogError` (naming the field and the value) if ``data`` breaks the schema."""
    if not isinstance(data, dict):
        raise EpisodeLogError(f"expected a JSON object per line, got {type(data).__name__}")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise _fail(missing[0], f"missing (all missing: {missing})")
    unknown = sorted(set(data) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise _fail(unknown[0], f"unknown field (unknown: {unknown}; free-form data goes under 'extra')")
    if "schema_version" in data and data["schema_version"] != SCHEMA_VERSION:
        raise _fail("schema_version", f"expected {SCHEMA_VERSION}, got {data['schema_version']!r}")

    for name in ("env", "split", "task_id", "task_uid", "task_type", "method", "model"):
        _check_str(data, name)
    expected_uid = f"{data['env']}/{data['split']}/{data['task_id']}"
    if data["task_uid"] != expected_uid:
        raise _fail("task_uid", f"{data['task_uid']!r} does not match env/split/task_id {expected_uid!r}")
    if data["env"] == "alfworld" and data["task_type"] not in ALFWORLD_TASK_TYPES:
        raise _fail("task_type", f"{data['task_type']!r} is not an ALFWorld type {list(ALFWORLD_TASK_TYPES)}")
    if not _is_int(data["seed"]):
        raise _fail("seed", f"expected an int, got {data['seed']!r}")

    blueprint = data["blueprint"]
    if blueprint is not None and (
        not isinstance(blueprint, list) or not all(isinstance(g, str) for g in blueprint)
    ):
        raise _fail("blueprint", f"expected a list of strings or null, got {blueprint!r}")
    actions = data["actions"]
    if not isinstance(actions, list) or not all(a is None or isinstance(a, str) for a in actions):
        raise _fail("actions", f"expected a list of strings (or nulls), got {actions!r}")
    rewards = data["rewards"]
    if not isinstance(rewards, list):
        raise _fail("rewards", f"expected a list of numbers, got {rewards!r}")
    for i, reward in enumerate(rewards):
        _check_finite(f"rewards[{i}]", reward)
    _check_finite("episode_return", data["episode_return"])
    total = math.fsum(rewards)
    if not math.isclose(total, data["episode_return"], rel_tol=1e-6, abs_tol=1e-6):
        raise _fail("episode_return", f"{data['episode_return']!r} != sum(rewards) = {total!r}")
    if not _is_int(data["num_steps"]) or data["num_steps"] < 0:
        raise _fail("num_steps", f"expected an int >= 0, got {data['num_steps']!r}")
    if not (data["num_steps"] == len(actions) == len(rewards)):
        raise _fail(
            "num_steps",
            f"{data['num_steps']!r} disagrees with len(actions)={len(actions)} / len(rewards)={len(rewards)}",
        )
    if not isinstance(data["won"], bool):
        raise _fail("won", f"expected true or false, got {data['won']!r}")

    score = data["score"]
    if score is None:
        if data["env"] in SCORED_ENVS:
            raise _fail("score", f"required for env {data['env']!r}, got null")
    else:
        _check_finite("score", score)
        if not 0.0 <= score <= 1.0:
            raise _fail("score", f"expected a number in [0, 1], got {score!r}")
        if data["env"] == "alfworld":
            raise _fail("score", f"must be null for alfworld, got {score!r}")

    tokens = data["tokens"]
    if not isinstance(tokens, dict) or set(tokens) != set(ROLES):
        raise _fail("tokens", f"expected an object with exactly the keys {list(ROLES)}, got {tokens!r}")
    for role in ROLES:
        if not _is_int(tokens[role]) or tokens[role] < 0:
            raise _fail(f"tokens.{role}", f"expected an int >= 0, got {tokens[role]!r}")
    flags = data["flags"]
    if not isinstance(flags, list) or not all(isinstance(f, str) and f for f in flags):
        raise _fail("flags", f"expected a list of non-empty strings, got {flags!r}")
    if "extra" in data and not isinstance(data["extra"], dict):
        raise _fail("extra", f"expected an object, got {data['extra']!r}")


class EpisodeLogWriter:
    """Appends records to a JSONL log, one line each, flushed per episode.

    Flushing per line means an interrupted evaluation keeps every finished episode readable.
    Use as a context manager: ``with EpisodeLogWriter(path) as log: log.write(record)``.
    """

    def __init__(self, path: str | Path, mode: str = "a") -> None:
        if mode not in ("a", "w"):
            raise ValueError(f"mode {mode!r}: expected 'a' (append) or 'w' (overwrite)")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fp: IO[str] | None = self.path.open(mode, encoding="utf-8")

    def write(self, record: EpisodeRecord) -> None:
        if self._fp is None:
            raise ValueError(f"episode log {self.path} is closed")
        validate_record(record.as_dict())  # catches fields changed after construction
        self._fp.write(record.to_json() + "\n")
        self._fp.flush()

    def close(self) -> None:
        if self._fp is not None:
            self._fp.close()
            self._fp = None

    def __enter__(self) -> EpisodeLogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_episodes(path: str | Path, records: Iterable[EpisodeRecord], mode: str = "w") -> Path:
    """Write ``records`` to ``path`` (overwriting by default); returns the path."""
    with EpisodeLogWriter(path, mode=mode) as log:
        for record in records:
            log.write(record)
    return Path(path)


def iter_episodes(path: str | Path) -> Iterator[tuple[int, EpisodeRecord]]:
    """Yield ``(line_number, record)`` for each non-blank line; errors cite ``path:line``."""
    path = Path(path)
    with path.open(encoding="utf-8") as fp:
        for lineno, line in enumerate(fp, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line, parse_constant=_reject_constant)
            except (json.JSONDecodeError, ValueError) as err:
                raise EpisodeLogError(f"{path}:{lineno}: not valid JSON ({err})") from None
            try:
                yield lineno, EpisodeRecord.from_dict(data)
            except EpisodeLogError as err:
                raise EpisodeLogError(f"{path}:{lineno}: {err}") from None


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed in an episode log")


def read_episodes(path: str | Path) -> list[EpisodeRecord]:
    """All records of one log file (validated)."""
    return [record for _, record in iter_episodes(path)]


def read_logs(paths: Iterable[str | Path], progress: bool = False) -> list[EpisodeRecord]:
    """Records of several logs, checked for duplicate episodes across all of them.

    An episode is identified by (env, split, task_uid, method, model, seed): appending a rerun to the
    same file would otherwise count its tasks twice and shrink the interval for nothing.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise EpisodeLogError("no episode logs given")
    records: list[EpisodeRecord] = []
    seen: dict[tuple, str] = {}
    task = None
    bar = None
    if progress:
        from rich.progress import Progress

        bar = Progress(transient=True)
        bar.start()
        task = bar.add_task("reading episode logs", total=len(paths))
    try:
        for path in paths:
            if not path.is_file():
                raise EpisodeLogError(f"episode log {str(path)!r} does not exist")
            for lineno, record in iter_episodes(path):
                key = (record.env, record.split, record.task_uid, record.method, record.model, record.seed)
                where = f"{path}:{lineno}"
                if key in seen:
                    raise EpisodeLogError(
                        f"{where}: duplicate episode (env, split, task_uid, method, model, seed)={key}, "
                        f"first seen at {seen[key]}"
                    )
                seen[key] = where
                records.append(record)
            if bar is not None:
                bar.advance(task)
    finally:
        if bar is not None:
            bar.stop()
    if not records:
        raise EpisodeLogError(f"no episodes in {[str(p) for p in paths]}")
    return records
