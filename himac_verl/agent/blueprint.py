"""Blueprints: the planner's output format, its parser, ``<sub_done>``, and the ``best_blueprint`` rule.

A blueprint is written by the planner in one turn as numbered subgoals inside a ``<plan>`` block::

    <think> optional reasoning </think>
    <plan>
    1. walk to the box
    2. push the box onto the target
    </plan>

The format is strict on purpose: the planner is trained on whether its blueprint parses (a blueprint that
does not parse gets the failure return and is still a training sample), so "almost a plan" must not be
silently repaired into a plan. Rules of :func:`parse_blueprint`, checked in this order:

- Tags are exactly ``<plan>`` and ``</plan>``, ASCII case-insensitive (``<PLAN>``, ``</Plan>``); no blanks
  inside the brackets, and no Unicode look-alike letter matches.
- The LAST complete ``<plan>...</plan>`` block is used, like actions: an opening tag inside an open block
  restarts the block (in ``<plan>1. draft <plan>1. a</plan>`` the block is ``1. a``), a closing tag with no
  open block is ignored, and an unclosed block does not count (``no_plan_block``).
- The reply ENDS with that block: only blanks may follow its ``</plan>`` (``text_after_plan``). A planner
  that keeps writing after its plan has not finished its turn; were the tail ignored, nothing would teach
  it to stop, and a drifting policy's replies grow to the length limit while still "parsing" (measured on
  the CPU learning run: after one executor phase the planner wrote ``</plan>. push the box down</plan>. ...``
  up to the 48-token limit, and those replies kept earning the macro reward of their first block).
- Multi-line block: every non-blank line is one subgoal, ``N. text`` or ``N) text``, with ``N`` counting
  1, 2, 3 ... in order (``bad_numbering`` otherwise). A line is never split (ALFWorld subgoals hold names
  such as ``desk 2.``). Blanks may stand between ``N`` and the separator; after the separator come blanks
  or directly a character that is neither a digit nor a blank (``1.Find the key`` is ``Find the key``;
  ``1.5 km`` and a bare ``1.`` are ``bad_line``).
- One-line block (exactly one non-blank line): when that line starts with marker ``1`` and every marker
  on it reads 1, 2, ..., K in order, K >= 2, the line is split into K subgoals at the markers
  (``<plan> 1. go left 2. push up </plan>`` gives ``go left``, ``push up``). A marker here is ``N.`` or
  ``N)`` preceded by the line start or a blank and followed by a blank (so ``desk 2.`` at the end of the
  line is no marker). If the markers do not read exactly 1..K, the line is one ordinary subgoal line.
  An empty piece between two markers is ``bad_line``.
- ``N`` is plain ASCII decimal ``[1-9][0-9]{0,2}``: a leading zero (``0.``, ``01.``), more than three
  digits, or any non-ASCII digit (Arabic-Indic ``١``, fullwidth ``１``...) makes the line ``bad_line``.
- 1 to ``max_subgoals`` subgoals (``too_many_subgoals``), each at most ``max_subgoal_chars`` characters
  after stripping (``subgoal_too_long``).

``<sub_done>`` (the executor's "this subgoal is finished", :func:`declares_sub_done`): the tag is
``<sub_done>`` with ASCII case-insensitive letters, blanks allowed inside the brackets and an optional
self-closing slash (``<sub_done/>``, ``< SUB_DONE >``). The tag counts only outside ``<think>`` and
``<action>``; write it after ``</action>`` in the same reply as the move that completes the subgoal. An
unclosed ``<think>`` or ``<action>`` hides everything after it (the model never finished it).
:func:`strip_sub_done` removes the tag from an action's text.

All parsers here run in time linear in the input length (one scan over the tags, string methods on the
lines, and no regex that can backtrack more than once over the same run of characters).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

SUB_DONE = "<sub_done>"
DEFAULT_MAX_SUBGOALS = 6
DEFAULT_MAX_SUBGOAL_CHARS = 200

# re.ASCII: with re.IGNORECASE alone, Python folds some non-ASCII letters onto ASCII ones (U+017F 'ſ'
# matches 's', U+212A Kelvin matches 'k', U+0130/U+0131 match 'i'); tags must be ASCII.
_PLAN_TAG_RE = re.compile(r"<(/?)plan>", re.ASCII | re.IGNORECASE)
# Head of a subgoal line (the line is already stripped): the number, blanks, the separator. ``[0-9]``, not
# ``\d``: non-ASCII digits are not numbers here. Backtracking is bounded by one run of digits.
_LINE_HEAD_RE = re.compile(r"([0-9]+)\s*[.)]")
# A marker of the one-line form: ``N.`` / ``N)`` preceded by the start or a blank, followed by a blank.
_MARKER_RE = re.compile(r"(?<!\S)([0-9]+)[.)](?=\s)")
# Executor-output tags: <think>, </think>, <action>, </action>, <sub_done>, <sub_done/> (blanks allowed
# inside the brackets). Each optional slash is grouped with its own trailing blanks, so no two blank runs
# are adjacent (adjacent ``\s*\s*`` would backtrack quadratically on "<" followed by many blanks).
_EXEC_TAG_RE = re.compile(r"<\s*(?:(/)\s*)?(think|action|sub_done)\s*(?:(/)\s*)?>", re.ASCII | re.IGNORECASE)
_SUB_DONE_RE = re.compile(r"<\s*sub_done\s*(?:/\s*)?>", re.ASCII | re.IGNORECASE)


@dataclass(frozen=True)
class Blueprint:
    """A parsed blueprint z = (g_1 .. g_K): ordered natural-language subgoals."""

    subgoals: tuple[str, ...]

    def __post_init__(self):
        if not self.subgoals:
            raise ValueError("Blueprint.subgoals must hold at least one subgoal, got ()")

    @property
    def num_subgoals(self) -> int:
        return len(self.subgoals)

    def render(self) -> str:
        """Canonical text (``1. ...`` lines), the form executors see in their prompts."""
        return "\n".join(f"{i}. {g}" for i, g in enumerate(self.subgoals, start=1))


class BlueprintParseError(ValueError):
    """The planner's output is not a blueprint. ``reason`` is a short stable code for metrics."""

    REASONS = ("no_plan_block", "text_after_plan", "empty_plan", "bad_line", "bad_numbering",
               "too_many_subgoals", "subgoal_too_long")

    def __init__(self, reason: str, detail: str):
        assert reason in self.REASONS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def parse_blueprint(
    text: str,
    max_subgoals: int = DEFAULT_MAX_SUBGOALS,
    max_subgoal_chars: int = DEFAULT_MAX_SUBGOAL_CHARS,
) -> Blueprint:
    """Parse a planner output into a :class:`Blueprint` or raise :class:`BlueprintParseError`.

    Never raises anything else for any ``str`` input (limits must be positive ints).
    """
    if max_subgoals < 1 or max_subgoal_chars < 1:
        raise ValueError(f"limits must be >= 1, got max_subgoals={max_subgoals}, "
                         f"max_subgoal_chars={max_subgoal_chars}")
    found = _last_plan_block(text)
    if found is None:
        raise BlueprintParseError("no_plan_block", "no complete <plan>...</plan> block")
    block, end = found
    if text[end:].strip():
        raise BlueprintParseError("text_after_plan", f"the reply goes on after </plan>: {text[end:end + 60]!r}")
    lines = [line.strip() for line in block.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise BlueprintParseError("empty_plan", "the <plan> block holds no subgoal")
    pieces = _split_one_line(lines[0]) if len(lines) == 1 else None
    subgoals: list[str] = []
    if pieces is not None:
        numbered = [(number, goal, f"piece {number} of the one-line plan") for number, goal in pieces]
    else:
        numbered = (_parse_line(line) + (f"line {line[:60]!r}",) for line in lines)
    for number, goal, where in numbered:
        if number != len(subgoals) + 1:
            raise BlueprintParseError("bad_numbering", f"subgoal numbered {number}, expected {len(subgoals) + 1}")
        if not goal:
            raise BlueprintParseError("bad_line", f"{where} holds no subgoal text")
        if len(goal) > max_subgoal_chars:
            raise BlueprintParseError("subgoal_too_long",
                                      f"subgoal {number} has {len(goal)} chars > max_subgoal_chars={max_subgoal_chars}")
        subgoals.append(goal)
        if len(subgoals) > max_subgoals:
            raise BlueprintParseError("too_many_subgoals", f"more than max_subgoals={max_subgoals} subgoals")
    return Blueprint(tuple(subgoals))


def _last_plan_block(text: str) -> tuple[str, int] | None:
    """(content, end of its ``</plan>``) of the last complete ``<plan>...</plan>`` block (one scan over the
    tags), None if none."""
    open_end: int | None = None
    block: tuple[int, int, int] | None = None
    for tag in _PLAN_TAG_RE.finditer(text):
        if not tag.group(1):
            open_end = tag.end()  # an opening tag (re)starts the block
        elif open_end is not None:
            block, open_end = (open_end, tag.start(), tag.end()), None
    return None if block is None else (text[block[0]:block[1]], block[2])


def _parse_line(line: str) -> tuple[int, str]:
    """``(N, subgoal)`` of one stripped, non-blank ``N. text`` line; ``BlueprintParseError`` otherwise."""
    head = _LINE_HEAD_RE.match(line)
    rest = line[head.end():] if head is not None else ""
    if head is None or not rest or rest[0].isdigit():
        raise BlueprintParseError("bad_line", f"line {line[:60]!r} is not 'N. subgoal'")
    digits = head.group(1)
    if digits[0] == "0" or len(digits) > 3:
        raise BlueprintParseError("bad_line", f"line {line[:60]!r}: {digits[:8]!r} is not a number 1..999 "
                                              "without leading zeros")
    return int(digits), rest.lstrip()


def _split_one_line(line: str) -> list[tuple[int, str]] | None:
    """The one-line form ``1. a 2. b ... K. z`` (K >= 2) as ``[(1, "a"), ..., (K, "z")]``, or None when the
    stripped ``line`` is not that form (then it is one ordinary subgoal line)."""
    markers = []
    for marker in _MARKER_RE.finditer(line):
        if marker.group(1) != str(len(markers) + 1):
            return None  # the markers do not read 1, 2, ..., K
        markers.append(marker)
    if len(markers) < 2 or markers[0].start() != 0:
        return None
    ends = [m.start() for m in markers[1:]] + [len(line)]
    return [(i, line[m.end():end].strip()) for i, (m, end) in enumerate(zip(markers, ends, strict=True), start=1)]


def choose_blueprint(response_ids: list[int], choices: tuple[tuple[str, ...], ...]) -> Blueprint:
    """The ``choice`` format: the planner's FIRST response token picks one of k fixed blueprints
    (``choices[first_token_id % k]``).

    A diagnostic format for the blueprint bandit (a tiny random model cannot write a ``<plan>`` block but
    always emits a first token, so its planner's choice is learnable from the first step). An empty
    response does not parse.
    """
    if not choices:
        raise ValueError("himac.agent.blueprint_choices is empty; the choice format needs k >= 1 blueprints")
    if not response_ids:
        raise BlueprintParseError("empty_plan", "the planner wrote no token, so it chose no blueprint")
    return Blueprint(tuple(choices[int(response_ids[0]) % len(choices)]))


def parse_planner_output(text: str, response_ids: list[int], settings) -> Blueprint:
    """The planner's blueprint in the configured format (``himac.agent.blueprint_format``):
    ``tagged`` (default, :func:`parse_blueprint`) or ``choice`` (:func:`choose_blueprint`)."""
    if settings.blueprint_format == "choice":
        return choose_blueprint(response_ids, settings.blueprint_choices)
    return parse_blueprint(text, settings.max_subgoals, settings.max_subgoal_chars)


def declares_sub_done(text: str) -> bool:
    """Whether an executor output declares the active subgoal finished.

    A ``<sub_done>`` tag (ASCII case-insensitive, blanks allowed inside the brackets, optional self-closing
    slash: ``<sub_done/>``, ``< SUB_DONE >``) counts only outside ``<think>...</think>`` and
    ``<action>...</action>`` blocks: ``"<think>x</think><action>up</action><sub_done>"`` declares,
    ``"<action>take apple <sub_done></action>"`` does not. An unclosed ``<think>`` or ``<action>`` hides
    everything after it; an opening tag inside an open block of the same kind changes nothing, a closing
    tag with no open block is ignored. One scan over the tags; never raises on a ``str``.
    """
    inside: str | None = None  # "think" or "action" while such a block is open
    for tag in _EXEC_TAG_RE.finditer(text):
        closing, name, self_closing = tag.group(1), tag.group(2).lower(), tag.group(3)
        if inside is not None:
            if closing and not self_closing and name == inside:
                inside = None
        elif name == "sub_done":
            if not closing:
                return True
        elif not closing and not self_closing:
            inside = name
    return False


def strip_sub_done(action: str) -> str:
    """``action`` without any ``<sub_done>`` tag (same tag grammar as :func:`declares_sub_done`), stripped:
    ``"take apple <sub_done>"`` -> ``"take apple"``. One pass, so linear time: a tag that only appears once
    another is removed (``"<sub<sub_done>_done>"``) stays. Never raises on a ``str``."""
    if "<" not in action:
        return action.strip()
    return _SUB_DONE_RE.sub("", action).strip()


@dataclass(frozen=True)
class BlueprintCandidate:
    """One blueprint of a macro group with the outcome of its greedy scoring episode."""

    index: int  # sample index inside the macro pass (0..N-1)
    blueprint: Blueprint
    episode_return: float
    won: bool
    env_steps: int


def best_blueprint(
    candidates: Sequence[BlueprintCandidate],
    selection: str = "best",
    rng: random.Random | None = None,
) -> BlueprintCandidate | None:
    """Pick z* from the parsed, successfully scored blueprints of one macro group.

    ``selection="best"`` (the paper's rule, made explicit): highest scoring-episode return; ties go to the
    one whose episode was won, then to fewer env steps, then to the lowest sample index. Deterministic.
    ``selection="random"`` (ablation): uniform over the candidates with ``rng`` (seeded by the caller).
    Returns None when there is no candidate (every blueprint failed to parse or to be scored).
    """
    if selection not in ("best", "random"):
        raise ValueError(f"blueprint selection must be 'best' or 'random', got {selection!r}")
    if not candidates:
        return None
    for c in candidates:
        if not math.isfinite(c.episode_return):
            raise ValueError(f"blueprint candidate {c.index} has a non-finite episode_return {c.episode_return!r}")
    if selection == "random":
        if rng is None:
            raise ValueError("blueprint selection 'random' needs a seeded rng, got rng=None")
        ordered = sorted(candidates, key=lambda c: c.index)
        return ordered[rng.randrange(len(ordered))]
    return min(candidates, key=lambda c: (-c.episode_return, not c.won, c.env_steps, c.index))
