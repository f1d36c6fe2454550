"""Action extraction and per-env projection: what maps, what is invalid, which block is picked, and that
nothing raises. Linear-time checks on 1 MB adversarial inputs: tests/test_parsers_adversarial.py."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from himac_verl.envs.projection import (
    MAX_ACTION_CHARS,
    Projection,
    action_text,
    extract_action,
    normalise_command,
    project_admissible,
    project_sokoban,
)

ADMISSIBLE = [
    "go to drawer 1", "go to drawer 11", "go to countertop 1", "take apple 1 from countertop 1",
    "open drawer 1", "look", "inventory", "go to cabinet 1", "go to cabinet 2",
]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("I think so. <action>up</action>", "up"),
        ("<action> go to desk 1 \n</action>", "go to desk 1"),
        ("<ACTION>left</Action>", "left"),
        ("< action >left</ action >", "left"),
        ("<action>up</action> then <action>down</action>", "down"),  # the last block wins
        ("<action>up</action> and <action>down", "up"),  # an unclosed block does not count
        ("<action>a<action>b</action>", "b"),  # an opening tag inside a block starts a new one
        ("<action>line one\nline two</action>", "line one\nline two"),
        ("no tags at all", None),
        ("</action>up<action>", None),
        ("<action></action>", None),
        ("<action>  \n\t </action>", None),
        ("<action>" + "x" * MAX_ACTION_CHARS + "</action>", "x" * MAX_ACTION_CHARS),
        ("<action>" + "x" * (MAX_ACTION_CHARS + 1) + "</action>", None),
        ("", None),
        (None, None),
        ("<action>\u202e\u0000\ud800 ☃</action>", "\u202e\u0000\ud800 ☃"),  # junk is returned, not judged
        ("<action>a</action></action>", "a"),  # a closing tag with no open block is ignored
        ("<action>a<action>b</action>c</action>", "b"),
        ("<action>a</action>b</action>", "a"),
        ("<think><action>up</action></think> <action>down", "up"),
        ("<\tACTION\n>left</\n action \t>", "left"),  # ASCII blanks inside the brackets
        ("<action>" * 50 + "up</action>", "up"),
        # tags are ASCII: look-alike letters that re.IGNORECASE would fold onto ASCII make no tag
        ("<act\u0131on>up</act\u0131on>", None),  # U+0131 dotless i
        ("<act\u0130on>up</act\u0130on>", None),  # U+0130 dotted capital I
        ("<action>up</act\u0131on>", None),
        ("<action>up</action><act\u0131on>down</action>", "up"),  # not an opening tag: nothing restarts
        ("<\uff41ction>up</\uff41ction>", None),  # fullwidth a
        ("<\u3000action>up</action>", None),  # a non-ASCII blank inside the brackets
    ],
)
def test_extract_action(text, expected):
    assert extract_action(text) == expected


def test_extract_action_rejects_non_text_by_name():
    with pytest.raises(TypeError, match="must be a str or None, got int"):
        extract_action(3)


# The documented definition of extract_action as one regex (an opening tag, text holding no opening tag,
# the first closing tag; the last such block), used as an oracle on short inputs.
_ORACLE_RE = re.compile(r"<\s*action\s*>((?:(?!<\s*action\s*>).)*?)<\s*/\s*action\s*>",
                        re.ASCII | re.IGNORECASE | re.DOTALL)


def _oracle(text: str) -> str | None:
    blocks = _ORACLE_RE.findall(text)
    content = blocks[-1].strip() if blocks else ""
    return content if 0 < len(content) <= MAX_ACTION_CHARS else None


_TAGGY = st.lists(st.sampled_from(["<action>", "</action>", "< Action >", "</ ACTION>", "<", "/", ">", " ", "\n",
                                   "action", "up", "go to desk 1", "\u0131", "\u212a"])).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(alphabet=st.characters(), max_size=400), _TAGGY), st.text(max_size=50),
       st.sampled_from(ADMISSIBLE), st.sampled_from(["{}", "{}.", "  {}  ", '"{}"']), st.booleans())
def test_extract_and_project_pick_the_right_block(junk, inner, command, form, upper):
    # 1. arbitrary text: the block the documented definition picks, and projections inside the action set
    for text in (junk, f"{junk}<action>{inner}</action>", f"<action>{junk}", f"{junk}</action><action>{junk}"):
        out = extract_action(text)
        assert out == _oracle(text)
        assert project_sokoban(out) in (None, "up", "down", "left", "right")
        projected = project_admissible(out, ADMISSIBLE)
        assert (projected.command is None) == (projected.how == "invalid")
        assert projected.command is None or projected.command in ADMISSIBLE
    # 2. a well-formed block appended after any junk is the one extracted, and projects onto its command
    written = form.format(command.upper() if upper else command)
    text = f"{junk}<action>{written}</action>"
    assert extract_action(text) == written.strip()
    assert project_admissible(extract_action(text), ADMISSIBLE) == Projection(command, "exact")
    assert project_admissible(action_text(text), ADMISSIBLE) == Projection(command, "exact")
    # 3. an inner text without tags comes back stripped (or None when empty / too long)
    safe = inner.replace("<", "")
    expected = safe.strip() if 0 < len(safe.strip()) <= MAX_ACTION_CHARS else None
    assert extract_action(f"{junk}<action>{safe}</action>") == expected


def test_action_text_takes_raw_output_or_extracted_action():
    assert action_text("Thinking... <action>Up</action>") == "Up"
    assert action_text("up") == "up"
    assert action_text("<action></action>") == "<action></action>"  # fails projection later
    assert action_text(None) is None and action_text(7) is None


def test_normalise_command():
    assert normalise_command("  Go to  Desk 1. ") == "go to desk 1"
    assert normalise_command('"look"') == "look"
    assert normalise_command("`inventory`!") == "inventory"


# Sokoban: the accepted forms, listed on purpose.
@pytest.mark.parametrize(
    "text, expected",
    [
        ("up", "up"), ("Up.", "up"), ("DOWN", "down"), ('"left"', "left"), ("right!", "right"),
        ("move up", "up"), ("Move Left.", "left"), ("go down", "down"), ("push right", "right"),
        ("step up", "up"), ("move: down", "down"), ("  up  ", "up"),
    ],
)
def test_sokoban_accepts(text, expected):
    assert project_sokoban(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "north", "u", "1", "upward", "up left", "I move up", "move", "jump up", "", "   ", None,
        "up" * 200, "\u2191", "ｕｐ", "up\x00", "move move up",
    ],
)
def test_sokoban_rejects(text):
    assert project_sokoban(text) is None




@pytest.mark.parametrize(
    "text, command, how",
    [
        ("go to drawer 1", "go to drawer 1", "exact"),
        ("Go To  Drawer 1.", "go to drawer 1", "exact"),
        ("go to drawer 11", "go to drawer 11", "exact"),
        ("go to countertop1", "go to countertop 1", "fuzzy"),  # ratio 97
        ("take aple 1 from countertop 1", "take apple 1 from countertop 1", "fuzzy"),  # ratio 98
        ("go to drawr 1", "go to drawer 1", "fuzzy"),  # 96 vs 93 for "drawer 11": numbers decide
        ("go to drawer 12", None, "invalid"),  # other numbers: never "drawer 1"
        ("go to cabinet", None, "invalid"),  # no number: matches neither cabinet
        ("go to cabinet 3", None, "invalid"),
        ("open the drawer 1", None, "invalid"),  # ratio 87 < 90
        ("inventroy", None, "invalid"),  # ratio 89 < 90
        ("take apple from countertop 1", None, "invalid"),
        ("fly to the moon", None, "invalid"),
        ("", None, "invalid"),
        ("   ", None, "invalid"),
        (None, None, "invalid"),
        ("go to drawer 1" + " " * MAX_ACTION_CHARS, None, "invalid"),  # over-long text, even if it would match
        ("\ud83d\ude00\u0000\u200b", None, "invalid"),
    ],
)
def test_project_admissible(text, command, how):
    out = project_admissible(text, ADMISSIBLE)
    assert (out.command, out.how) == (command, how)


def test_project_admissible_ties_are_invalid():
    # Both candidates are one insertion away with the same numbers: ambiguous, so invalid.
    assert project_admissible("go to shelf 1", ["go to shelfa 1", "go to shelfb 1"]).how == "invalid"
    assert project_admissible("go to shelf 1", ["go to shelfa 1", "go to desk 1"]).command == "go to shelfa 1"


def test_project_admissible_threshold_is_a_parameter():
    assert project_admissible("open the drawer 1", ADMISSIBLE, threshold=85).command == "open drawer 1"
    assert project_admissible("go to countertop1", ADMISSIBLE, threshold=99).how == "invalid"
    assert project_admissible("look", []).how == "invalid"
