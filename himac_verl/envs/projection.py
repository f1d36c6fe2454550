"""From a model's text to one legal env action (or a flagged "invalid").

Two stages, kept apart because the agent loop needs the first on its own (to log what the model tried):

1. :func:`extract_action` pulls the text of the last complete ``<action>...</action>`` block out of a model
   output. Tags are ``<action>`` and ``</action>`` with ASCII case-insensitive letters and ASCII blanks
   allowed inside the brackets (``< Action >``, ``</ ACTION >``); a non-ASCII look-alike letter (U+0131
   dotless i, U+0130, ...) does not make a tag. An opening tag inside an open block restarts the block (in
   ``<action>a<action>b</action>`` the block is ``b``), a closing tag with no open block is ignored, and
   an unclosed block does not count. Linear time: one scan over the tags.
2. A per-env projection maps that text onto the env's action set: :func:`project_sokoban` (four
   directions) and :func:`project_admissible` (ALFWorld's admissible commands; WebShop may reuse it).

``<sub_done>`` is the agent's business (``himac_verl.agent.blueprint.declares_sub_done``): the tag counts
only outside ``<think>`` and ``<action>``; write it after ``</action>`` in the same reply as the move that
completes the subgoal. A tag inside the block is removed by the agent loop (``strip_sub_done``) before
projection.

Projections are deliberately conservative: a wrong guess executes an action the model did not mean and
teaches it that sloppy output works, while "invalid" costs only ``INVALID_ACTION_PENALTY`` and leaves the
state unchanged. Nothing here raises on any ``str`` input; ``None`` (no action found) projects to invalid.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_ACTION_CHARS = 300

# An opening or closing action tag; blanks allowed inside the brackets ("< Action >", "</ action >"). The
# slash is grouped with its own trailing blanks so that no two blank runs are adjacent (``\s*/?\s*`` would
# backtrack quadratically on "<" followed by many blanks). re.ASCII: without it re.IGNORECASE lets U+0130
# and U+0131 match "i" (U+017F matches "s", U+212A matches "k" in other tags).
_ACTION_TAG_RE = re.compile(r"<\s*(?:(/)\s*)?action\s*>", re.ASCII | re.IGNORECASE)


def extract_action(text: str | None) -> str | None:
    """Stripped content of the LAST complete ``<action>...</action>`` block in a model output.

    Tags are ASCII case-insensitive with ASCII blanks allowed inside the brackets; an unclosed block does
    not count and an opening tag nested in a block restarts it (in ``"<action>a<action>b</action>"`` the
    block is ``b``). Returns None when there is no block, when its content is empty/whitespace, or when
    it is longer than ``MAX_ACTION_CHARS`` (a runaway generation is not an action). ``None`` in gives
    ``None`` out. Never raises on a ``str``; linear time (one scan over the tags).
    """
    if text is None:
        return None
    if not isinstance(text, str):
        raise TypeError(f"extract_action: text must be a str or None, got {type(text).__name__}: {text!r:.80}")
    if "<" not in text:
        return None
    open_end: int | None = None
    block: tuple[int, int] | None = None
    for tag in _ACTION_TAG_RE.finditer(text):
        if not tag.group(1):
            open_end = tag.end()  # an opening tag (re)starts the block
        elif open_end is not None:
            block, open_end = (open_end, tag.start()), None
    if block is None:
        return None
    content = text[block[0]:block[1]].strip()
    if not content or len(content) > MAX_ACTION_CHARS:
        return None
    return content


def action_text(action: str | None) -> str | None:
    """What an env's ``step`` projects: the ``<action>`` block when the text holds one, else the text.

    Lets ``step`` take either :func:`extract_action`'s output or a raw model output. Text with tags but no
    usable block (``"<action></action>"``) stays as it is and then fails projection (invalid).
    """
    if not isinstance(action, str):
        return None
    if "<" in action:
        inner = extract_action(action)
        if inner is not None:
            return inner
    return action


def normalise_command(text: str) -> str:
    """Lower case, blanks collapsed, surrounding quotes/backticks and trailing ``.!;,`` removed.

    ``"  Go to  Desk 1. "`` -> ``"go to desk 1"``. Used for exact matching of free-form commands.
    """
    s = " ".join(text.split()).lower()
    s = s.strip("\"'`")
    s = s.rstrip(".!;,").strip()
    return s.strip("\"'`").strip()


# --- Sokoban -----------------------------------------------------------------------------------------

SOKOBAN_ACTIONS: tuple[str, ...] = ("up", "down", "left", "right")
# Optional verb before the direction. Deliberately small: "north", "u", "1" ... are NOT accepted (the
# prompt asks for up/down/left/right; accepting aliases would hide format errors from the reward).
SOKOBAN_VERBS: tuple[str, ...] = ("move", "go", "push", "step")


def project_sokoban(action: str | None) -> str | None:
    """Map action text onto one of ``SOKOBAN_ACTIONS``; None when it is not one of them.

    Accepted (case-insensitive, blanks collapsed, surrounding quotes and a trailing ``.!;,`` dropped):
    ``up``, ``Up.``, ``"LEFT"``, ``move up``, ``go left``, ``push right``, ``step down`` (and ``move:
    up``). Everything else is invalid: other words (``north``, ``u``, ``1``), two directions
    (``up left``), sentences (``I move up``), text longer than ``MAX_ACTION_CHARS``.
    """
    if not isinstance(action, str) or len(action) > MAX_ACTION_CHARS:
        return None
    s = normalise_command(action)
    words = s.replace(":", " ").split()
    if len(words) == 2 and words[0] in SOKOBAN_VERBS:
        words = words[1:]
    if len(words) == 1 and words[0] in SOKOBAN_ACTIONS:
        return words[0]
    return None


# --- Admissible commands (ALFWorld) ---------------------------------------------------------------------

# rapidfuzz ``fuzz.ratio`` (0-100, normalised Indel similarity) a fuzzy match must reach. 90 tolerates a
# missing blank or a one-letter typo in a 20-character command ("go to countertop1", "take aple 1 from
# table 1") but not a different verb or object ("go to drawer" vs "open drawer 1" scores ~70).
FUZZY_THRESHOLD = 90.0
_NUMBER_RE = re.compile(r"\d+")


@dataclass(frozen=True)
class Projection:
    """A projected action: the legal command (None when invalid) and how it was found."""

    command: str | None
    how: str  # "exact", "fuzzy" or "invalid"


def project_admissible(action: str | None, admissible: list[str], threshold: float = FUZZY_THRESHOLD) -> Projection:
    """Map action text onto one of ``admissible`` (the env's legal commands for the current state).

    1. Exact: equal after :func:`normalise_command` on both sides.
    2. Fuzzy: the admissible command with the highest ``rapidfuzz.fuzz.ratio`` against the normalised
       text, if it reaches ``threshold``, has the same numbers in the same order (a typo may be forgiven,
       "drawer 12" never becomes "drawer 1"), and is the unique best (ties are ambiguous, so invalid).
    3. Otherwise invalid. Text longer than ``MAX_ACTION_CHARS``, empty text and ``None`` are invalid.
    """
    if not isinstance(action, str) or len(action) > MAX_ACTION_CHARS:
        return Projection(None, "invalid")
    s = normalise_command(action)
    if not s:
        return Projection(None, "invalid")
    normalised = [normalise_command(c) for c in admissible]
    for command, norm in zip(admissible, normalised, strict=True):
        if norm == s:
            return Projection(command, "exact")
    from rapidfuzz import fuzz  # local: keeps this module importable (and fast) without rapidfuzz

    numbers = _NUMBER_RE.findall(s)
    scored = sorted(
        ((fuzz.ratio(s, norm), command) for command, norm in zip(admissible, normalised, strict=True)
         if _NUMBER_RE.findall(norm) == numbers),
        key=lambda pair: -pair[0],
    )
    if not scored or scored[0][0] < threshold:
        return Projection(None, "invalid")
    if len(scored) > 1 and scored[1][0] == scored[0][0]:
        return Projection(None, "invalid")
    return Projection(scored[0][1], "fuzzy")
