"""Per-sample contract fields (``extra_fields`` dicts) turned into validated index tensors.

The estimators never look at positions or at verl's ``uid``: group identity comes from the sample
contract (docs/advantage.md, "Contract fields read here"). This module is the one place where those Python dicts become tensors, so it is
also the one place that checks them. A bad batch fails here with an error naming the sample, the field
and the value, before any statistic is computed; the estimators can then trust the invariants below:

- every sample carries every contract field, with a valid ``role`` and ``pass``;
- rewards and returns are finite; ``penalty`` and ``episode_penalty`` are finite and <= 0; turns are
  non-negative integers; ``won`` and ``failed`` are bools;
- all real samples of one episode agree on ``task_uid``, ``pass``, ``blueprint_uid``, ``episode_return``,
  ``episode_penalty`` and ``failed`` (so "the episode's value" is well defined), and no episode repeats a
  turn;
- an episode is either flat or hierarchical: a HiMAC episode holds its planner turn (turn 0, as the
  contract numbers it) and the executor turns that scored or executed the blueprint, never flat samples;
- a planner sample is turn 0 of its episode (so an episode has at most one blueprint turn);
- every executor sample names its blueprint.

Padding rows (verl deep-copies a real sample and marks only ``is_padding``) are kept in the tensors, so
rows stay aligned with the batch, but they are skipped by these checks and by every statistic.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np
import torch

from himac_verl.core.contract import CONTRACT_FIELDS, PASSES, ROLES, Role

# Role codes of the tensors: indices into ROLES. Every sample must carry all of CONTRACT_FIELDS (the
# sample contract, core/contract.py's TurnSample); extra keys are ignored.
PLANNER, EXECUTOR, FLAT = (ROLES.index(r.value) for r in (Role.PLANNER, Role.EXECUTOR, Role.FLAT))


class FieldError(ValueError):
    """A sample's contract fields are missing, malformed or inconsistent."""


@dataclass(frozen=True)
class SampleFields:
    """The contract fields of a batch of B samples as tensors (all on CPU, all of shape [B]).

    String ids are factorised into contiguous integer indices in order of first appearance. Build it
    with :meth:`from_extra_fields`; the constructor does not re-check the cross-sample invariants.
    """

    role: torch.Tensor  # [B] long, index into ROLES
    is_micro: torch.Tensor  # [B] bool, pass == "micro"
    task: torch.Tensor  # [B] long in [0, num_tasks): task_uid
    blueprint: torch.Tensor  # [B] long, blueprint_uid index; -1 where None or ""
    micro_group: torch.Tensor  # [B] long in [0, num_micro_groups): (task_uid, blueprint_uid)
    episode: torch.Tensor  # [B] long in [0, num_episodes): episode_uid
    turn: torch.Tensor  # [B] long
    subgoal_index: torch.Tensor  # [B] long
    step_reward: torch.Tensor  # [B] float64
    episode_return: torch.Tensor  # [B] float64
    won: torch.Tensor  # [B] bool
    penalty: torch.Tensor  # [B] float64, <= 0, part of step_reward
    episode_penalty: torch.Tensor  # [B] float64, <= 0, part of episode_return
    failed: torch.Tensor  # [B] bool, the episode failed (env crash/hang, generate error)
    anchor_group: torch.Tensor  # [B] long in [0, num_anchor_groups): (task_uid, anchor)
    is_padding: torch.Tensor  # [B] bool
    num_tasks: int
    num_micro_groups: int
    num_episodes: int
    num_anchor_groups: int
    task_uids: tuple[str, ...]  # index -> task_uid, for logging and error messages
    episode_uids: tuple[str, ...]  # index -> episode_uid

    def __len__(self) -> int:
        return int(self.role.shape[0])

    @property
    def is_real(self) -> torch.Tensor:
        """[B] bool: not a padding row."""
        return ~self.is_padding

    @classmethod
    def from_extra_fields(
        cls,
        extra_fields: Sequence[Mapping[str, Any]],
        is_padding: Sequence[bool] | np.ndarray | torch.Tensor | None = None,
    ) -> SampleFields:
        """Validate the samples' ``extra_fields`` dicts (one per sample) and factorise them.

        Raises :class:`FieldError` naming the sample index, the field and the value on: an empty batch,
        a non-dict sample, a missing field, a bad role/pass, a non-finite or non-numeric reward or
        return, a positive or non-finite penalty / episode_penalty, a non-bool won / failed, a bad turn,
        an executor without blueprint_uid, an episode whose samples disagree, or a turn repeated inside
        one episode.
        """
        samples = list(extra_fields) if not isinstance(extra_fields, list) else extra_fields
        n = len(samples)
        if n == 0:
            raise FieldError("empty batch: no samples to compute advantages for")
        # Whole-column checks run at C speed (type sets, dict lookups); a per-sample loop runs only to
        # name the first offender once a column is known to be bad.
        if not all(type(x) is dict for x in samples):
            for i, sample in enumerate(samples):
                if not isinstance(sample, Mapping):
                    raise FieldError(f"sample {i}: extra_fields is a {type(sample).__name__}, expected a dict")
        required = frozenset(CONTRACT_FIELDS)
        if not all(required <= x.keys() for x in samples):
            for i, sample in enumerate(samples):
                missing = [k for k in CONTRACT_FIELDS if k not in sample]
                if missing:
                    raise FieldError(
                        f"sample {i}: missing field {missing[0]!r} "
                        f"(the sample contract needs {', '.join(CONTRACT_FIELDS)})"
                    )
        pad = _padding_array(is_padding, n)
        col = dict(zip(CONTRACT_FIELDS, map(list, zip(*map(itemgetter(*CONTRACT_FIELDS), samples)))))

        role = _categorical(col["role"], ROLES, "role")
        pass_ = _categorical(col["pass"], PASSES, "pass")
        for name in ("task_uid", "episode_uid"):
            _check_ids(col[name], name)
        blueprint_raw = col["blueprint_uid"]
        _check_optional_str(blueprint_raw, "blueprint_uid", "a str (or None)")
        has_blueprint = np.fromiter(map(bool, blueprint_raw), dtype=bool, count=n)
        bad = (role == EXECUTOR) & ~has_blueprint
        if bad.any():
            i = int(np.argmax(bad))
            raise FieldError(f"sample {i}: executor sample without blueprint_uid (got {blueprint_raw[i]!r})")
        _check_optional_str(col["anchor"], "anchor", "a str")
        no_anchor = np.fromiter((a is None for a in col["anchor"]), dtype=bool, count=n)
        bad = (role == FLAT) & no_anchor
        if bad.any():
            raise FieldError(f"sample {int(np.argmax(bad))}: flat sample without anchor (got None)")
        turn = _integers(col["turn"], "turn", minimum=0)
        subgoal_index = _integers(col["subgoal_index"], "subgoal_index", minimum=-1)
        step_reward = _finite_floats(col["step_reward"], "step_reward")
        episode_return = _finite_floats(col["episode_return"], "episode_return")
        won = _bools(col["won"], "won")
        penalty = _finite_floats(col["penalty"], "penalty", maximum=0.0)
        episode_penalty = _finite_floats(col["episode_penalty"], "episode_penalty", maximum=0.0)
        failed = _bools(col["failed"], "failed")

        task, task_uids = _factorize(col["task_uid"])
        episode, episode_uids = _factorize(col["episode_uid"])
        blueprint, _ = _factorize(blueprint_raw)
        blueprint = np.where(has_blueprint, blueprint, -1)
        blueprint = _compact(blueprint)
        micro_group, micro_keys = _factorize(list(zip(col["task_uid"], blueprint.tolist())))
        anchor_group, anchor_keys = _factorize(list(zip(col["task_uid"], col["anchor"])))

        real = ~pad
        _check_episodes_agree(
            episode,
            real,
            episode_uids,
            {
                "role": ((role == FLAT).astype(np.int64), ["flat" if r == "flat" else "planner/executor"
                                                            for r in col["role"]]),
                "task_uid": (task, col["task_uid"]),
                "pass": (pass_, col["pass"]),
                "blueprint_uid": (blueprint, blueprint_raw),
                "episode_return": (episode_return, col["episode_return"]),
                "episode_penalty": (episode_penalty, col["episode_penalty"]),
                "failed": (failed, col["failed"]),
            },
        )
        _check_unique_turns(episode, turn, real, episode_uids)
        bad_planner = np.flatnonzero(real & (role == PLANNER) & (turn != 0))
        if bad_planner.size:
            i = int(bad_planner[0])
            raise FieldError(f"sample {i}: planner sample has turn {int(turn[i])}; the planner's turn is 0")

        def t(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a)).to(dtype)

        return cls(
            role=t(role, torch.long),
            is_micro=t(pass_ == PASSES.index("micro"), torch.bool),
            task=t(task, torch.long),
            blueprint=t(blueprint, torch.long),
            micro_group=t(micro_group, torch.long),
            episode=t(episode, torch.long),
            turn=t(turn, torch.long),
            subgoal_index=t(subgoal_index, torch.long),
            step_reward=t(step_reward, torch.float64),
            episode_return=t(episode_return, torch.float64),
            won=t(won, torch.bool),
            penalty=t(penalty, torch.float64),
            episode_penalty=t(episode_penalty, torch.float64),
            failed=t(failed, torch.bool),
            anchor_group=t(anchor_group, torch.long),
            is_padding=t(pad, torch.bool),
            num_tasks=len(task_uids),
            num_micro_groups=len(micro_keys),
            num_episodes=len(episode_uids),
            num_anchor_groups=len(anchor_keys),
            task_uids=tuple(task_uids),
            episode_uids=tuple(episode_uids),
        )


# ----------------------------------------------------------------------------------------- helpers


def _factorize(values: Sequence[Hashable]) -> tuple[np.ndarray, list]:
    """Codes [N] (int64, first appearance order) and the distinct values. Dicts beat np.unique on
    Python objects (no sort, no object comparisons) and keep the order stable for error messages."""
    distinct = list(dict.fromkeys(values))
    index = {v: i for i, v in enumerate(distinct)}
    return np.fromiter(map(index.__getitem__, values), dtype=np.int64, count=len(values)), distinct


def _compact(codes: np.ndarray) -> np.ndarray:
    """Renumber non-negative codes to 0..K-1 in order of first appearance; -1 stays -1."""
    keep = codes >= 0
    if keep.all():
        return codes
    out = np.full_like(codes, -1)
    out[keep] = _factorize(codes[keep].tolist())[0]
    return out


def _padding_array(is_padding: Any, n: int) -> np.ndarray:
    if is_padding is None:
        return np.zeros(n, dtype=bool)
    if isinstance(is_padding, torch.Tensor):
        arr = is_padding.detach().cpu().numpy()
    elif isinstance(is_padding, np.ndarray):
        arr = is_padding
    else:  # a list: check the Python values before numpy would turn a mixed list into strings
        arr = np.empty(len(is_padding), dtype=object)
        arr[:] = list(is_padding)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise FieldError(f"is_padding has shape {tuple(arr.shape)}, expected ({n},) (one flag per sample)")
    if arr.dtype != bool:
        values = arr.tolist()
        flag_types = (bool, int, np.bool_, np.integer)
        bad = [i for i, v in enumerate(values) if not isinstance(v, flag_types) or v not in (0, 1)]
        if bad:
            raise FieldError(f"is_padding[{bad[0]}] is {values[bad[0]]!r}, expected a bool")
        arr = np.asarray(values, dtype=bool)
    return arr


def _categorical(values: list, allowed: tuple[str, ...], name: str) -> np.ndarray:
    lookup = {v: i for i, v in enumerate(allowed)}
    if set(map(type, values)) <= {str}:
        codes = [lookup.get(v, -1) for v in values]
        if -1 not in codes:
            return np.asarray(codes, dtype=np.int64)
    for i, v in enumerate(values):
        if not isinstance(v, str) or v not in lookup:
            raise FieldError(f"sample {i}: {name} is {v!r}, expected one of {', '.join(allowed)}")
    raise AssertionError("unreachable")


def _check_ids(values: list, name: str) -> None:
    if set(map(type, values)) <= {str} and min(map(len, values)) > 0:
        return
    for i, v in enumerate(values):
        if not isinstance(v, str) or not v:
            raise FieldError(f"sample {i}: {name} is {v!r}, expected a non-empty str")


def _check_optional_str(values: list, name: str, expected: str) -> None:
    if set(map(type, values)) <= {str, type(None)}:
        return
    for i, v in enumerate(values):
        if v is not None and not isinstance(v, str):
            raise FieldError(f"sample {i}: {name} is {v!r}, expected {expected}")


_INT_TYPES = (int, np.integer)
_REAL_TYPES = (int, float, np.integer, np.floating)


def _types_ok(values: list, allowed: tuple[type, ...]) -> bool:
    """All values are instances of `allowed` and none is a bool (bool is an int subclass)."""
    return all(issubclass(t, allowed) and not issubclass(t, (bool, np.bool_)) for t in set(map(type, values)))


INT64_MAX = int(np.iinfo(np.int64).max)
# Rewards and returns beyond this size are refused: group statistics square them in float64 (1e200**2
# overflows to inf, giving NaN or all-zero advantages) and the advantages go out in float32 (max ~3.4e38).
MAX_ABS_VALUE = 1e30


def _integers(values: list, name: str, minimum: int) -> np.ndarray:
    if _types_ok(values, _INT_TYPES):
        try:
            arr = np.asarray(values, dtype=np.int64)
        except OverflowError:  # a Python int past int64: named below
            arr = None
        if arr is not None and arr.min() >= minimum:
            return arr
    for i, v in enumerate(values):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral) or not minimum <= v <= INT64_MAX:
            raise FieldError(f"sample {i}: {name} is {v!r}, expected an int >= {minimum} (and < 2**63)")
    raise AssertionError("unreachable")


def _finite_floats(values: list, name: str, maximum: float = math.inf) -> np.ndarray:
    expected = ("a finite number" + (f" <= {maximum:g}" if math.isfinite(maximum) else "")
                + f" (of size at most {MAX_ABS_VALUE:g})")

    def bad(v: Any) -> bool:
        try:
            x = float(v)
        except OverflowError:  # an int too large for a float
            return True
        return not math.isfinite(x) or abs(x) > MAX_ABS_VALUE or x > maximum

    if _types_ok(values, _REAL_TYPES):
        try:
            arr = np.asarray(values, dtype=np.float64)
        except OverflowError:
            arr = None
        if arr is not None:
            ok = np.isfinite(arr) & (np.abs(arr) <= MAX_ABS_VALUE) & (arr <= maximum)
            if ok.all():
                return arr
    for i, v in enumerate(values):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
            raise FieldError(f"sample {i}: {name} is {v!r}, expected {expected}")
        if bad(v):
            shown = repr(v) if isinstance(v, numbers.Integral) else repr(float(v))
            raise FieldError(f"sample {i}: {name} is {shown}, expected {expected}")
    raise AssertionError("unreachable")


def _bools(values: list, name: str) -> np.ndarray:
    if set(map(type, values)) <= {bool, np.bool_}:
        return np.asarray(values, dtype=bool)
    for i, v in enumerate(values):
        if not isinstance(v, (bool, np.bool_)) and not (isinstance(v, numbers.Integral) and v in (0, 1)):
            raise FieldError(f"sample {i}: {name} is {v!r}, expected a bool")
    return np.asarray(values, dtype=bool)


def _check_episodes_agree(
    episode: np.ndarray,
    real: np.ndarray,
    episode_uids: list[str],
    columns: dict[str, tuple[np.ndarray, list]],
) -> None:
    """Every real sample must match its episode's first real sample on each column (vectorised)."""
    rows = np.flatnonzero(real)
    if rows.size == 0:
        return
    ep = episode[rows]
    first_row = np.full(len(episode_uids), -1, dtype=np.int64)
    first_row[ep[::-1]] = rows[::-1]  # the last write wins, so reversed order leaves the first row
    ref = first_row[ep]
    for name, (codes, raw) in columns.items():
        mismatch = codes[rows] != codes[ref]
        if mismatch.any():
            k = int(np.argmax(mismatch))
            i, j = int(rows[k]), int(ref[k])
            hint = ""
            if name == "role":
                hint = " (flat episodes hold flat samples only; HiMAC episodes planner and executor samples)"
            raise FieldError(
                f"sample {i}: episode {episode_uids[ep[k]]!r} has {name} {raw[i]!r} but sample {j} of the same "
                f"episode has {raw[j]!r}; all samples of an episode must agree on {name}{hint}"
            )


def _check_unique_turns(episode: np.ndarray, turn: np.ndarray, real: np.ndarray, episode_uids: list[str]) -> None:
    """A repeated (episode, turn) would make the turn order, hence GiGPO's step returns, ambiguous."""
    rows = np.flatnonzero(real)
    if rows.size == 0:
        return
    key = episode[rows] * (int(turn[rows].max()) + 1) + turn[rows]
    order = np.argsort(key, kind="stable")
    dup = np.flatnonzero(key[order][1:] == key[order][:-1])
    if dup.size:
        a, b = int(rows[order[dup[0]]]), int(rows[order[dup[0] + 1]])
        raise FieldError(
            f"sample {b}: episode {episode_uids[episode[b]]!r} repeats turn {int(turn[b])} (also sample {a}); "
            "each turn of an episode is one sample"
        )
