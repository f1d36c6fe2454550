"""Blueprint format, parser limits, <sub_done> detection and the best_blueprint rule.

Linear-time checks of the same parsers on 1 MB adversarial inputs: tests/test_parsers_adversarial.py."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from himac_verl.agent.blueprint import (
    Blueprint,
    BlueprintCandidate,
    BlueprintParseError,
    best_blueprint,
    declares_sub_done,
    parse_blueprint,
    strip_sub_done,
)


def test_parse_numbered_subgoals():
    bp = parse_blueprint("<think>easy</think>\n<plan>\n1. go to the box\n2) push it right \n</plan>")
    assert bp.subgoals == ("go to the box", "push it right")
    assert bp.render() == "1. go to the box\n2. push it right"


def test_parse_uses_last_block_and_is_case_insensitive():
    text = "<PLAN>1. a</PLAN> then better: <Plan>\n1. b\n\n2. c\n</plan>"
    assert parse_blueprint(text).subgoals == ("b", "c")


@pytest.mark.parametrize(
    "text, subgoals",
    [
        # an opening tag inside an open block restarts it: the last COMPLETE block is used
        ("<plan>\n1. draft\n<plan>\n1. a\n2. b\n</plan>", ("a", "b")),
        ("<plan> 1. draft <plan> 1. a 2. b </plan>", ("a", "b")),
        ("</plan><plan>1. a</plan>", ("a",)),  # a closing tag with no open block is ignored
        ("<plan>1. a</plan> \n\t", ("a",)),  # blanks may follow the block
        ("<plan>1. x</plan>\n<plan>\n1. a\n</plan>", ("a",)),
        # ASCII case-insensitive tags
        ("<PLAN>1. a</Plan>", ("a",)),
        ("<pLaN>\n1. a\n</PlAn>", ("a",)),
        # no blank needed after the separator when a non-digit, non-blank character follows
        ("<plan>1.Find the key</plan>", ("Find the key",)),
        ("<plan>\n1)Find the key\n2.Open the door\n</plan>", ("Find the key", "Open the door")),
        ("<plan>\n1 . go\n2 ) push\n</plan>", ("go", "push")),  # blanks before the separator are fine
        # multi-line: one subgoal per line, never split inside a line (ALFWorld names like "desk 2.")
        ("<plan>\n1. go to desk 2. 2. take pen 1\n2. go to desk 1\n</plan>",
         ("go to desk 2. 2. take pen 1", "go to desk 1")),
        ("<plan>\n1. go to desk 2.\n</plan>", ("go to desk 2.",)),
        # one-line form: markers reading 1, 2, ..., K split the line
        ("<plan> 1. go left 2. push up </plan>", ("go left", "push up")),
        ("<plan>1) go left 2) push up 3. look</plan>", ("go left", "push up", "look")),
        ("<plan>\n\n 1. go to desk 2 2. take pen 1 from desk 2 3. go to shelf 1. \n\n</plan>",
         ("go to desk 2", "take pen 1 from desk 2", "go to shelf 1.")),
        ("<plan>1. go to desk 2.</plan>", ("go to desk 2.",)),  # "2." at the end of the line is no marker
        ("<plan>1. go 2.push</plan>", ("go 2.push",)),  # "2." must be followed by a blank to be a marker
        ("<plan>1. a 1. b</plan>", ("a 1. b",)),  # markers do not read 1, 2: one ordinary line
        ("<plan>1. a 3. b</plan>", ("a 3. b",)),
        ("<plan>1. a 2. b 2. c</plan>", ("a 2. b 2. c",)),
        ("<plan>1. a 02. b</plan>", ("a 02. b",)),
        ("<plan>1. drawer\u00a02. b</plan>", ("drawer", "b")),  # any Unicode blank separates markers
    ],
)
def test_parse_accepts(text, subgoals):
    assert parse_blueprint(text).subgoals == subgoals


@pytest.mark.parametrize(
    "text, reason",
    [
        ("<plan>1. 2. b</plan>", "bad_line"),  # an empty piece of a one-line plan
        ("<plan>1. a 2. 3. c</plan>", "bad_line"),
        ("<plan>Plan: 1. a 2. b</plan>", "bad_line"),  # the one-line form starts with marker 1
        ("<plan>" + " ".join(f"{i}. step" for i in range(1, 8)) + "</plan>", "too_many_subgoals"),
        ("<plan>1. " + "x" * 201 + " 2. b</plan>", "subgoal_too_long"),
    ],
)
def test_parse_one_line_failures(text, reason):
    with pytest.raises(BlueprintParseError) as err:
        parse_blueprint(text)
    assert err.value.reason == reason


@pytest.mark.parametrize(
    "text, reason",
    [
        ("1. go\n2. push", "no_plan_block"),
        ("<plan>1. go", "no_plan_block"),
        # the reply ends with its plan: anything after the block's </plan> is a parse failure
        ("<plan>1. a</plan></plan>", "text_after_plan"),
        ("<plan>1. a</plan><plan>1. b", "text_after_plan"),  # an unclosed block does not count, and trails
        ("<plan>\n1. push the box down\n</plan>. push the box down\n</plan>. push", "text_after_plan"),
        ("<plan>1. a</plan> I hope this helps", "text_after_plan"),
        ("<plan>\n  \n</plan>", "empty_plan"),
        ("<plan>\ngo right\n</plan>", "bad_line"),
        ("<plan>\n1. go\nthen push\n</plan>", "bad_line"),
        ("<plan>\n1.\n</plan>", "bad_line"),
        ("<plan>\n2. go\n</plan>", "bad_numbering"),
        ("<plan>\n1. go\n3. push\n</plan>", "bad_numbering"),
        ("<plan>\n1. go\n1. push\n</plan>", "bad_numbering"),
        # N is plain ASCII decimal 1..999 without leading zeros
        ("<plan>\n001. go\n</plan>", "bad_line"),
        ("<plan>\n01. go\n</plan>", "bad_line"),
        ("<plan>\n0. go\n</plan>", "bad_line"),
        ("<plan>\n1234. go\n</plan>", "bad_line"),
        ("<plan>\n1. go\n02. push\n</plan>", "bad_line"),
        ("<plan>\u0661. go</plan>", "bad_line"),  # Arabic-Indic one
        ("<plan>\uff11. go</plan>", "bad_line"),  # fullwidth one
        ("<plan>\u0967. go</plan>", "bad_line"),  # Devanagari one
        ("<plan>\U0001d7cf. go</plan>", "bad_line"),  # mathematical bold one
        ("<plan>\n1. go\n\u0662. push\n</plan>", "bad_line"),
        # after the separator: blanks, or directly a non-digit non-blank character
        ("<plan>\n1.5 km north\n</plan>", "bad_line"),
        ("<plan>\n1)2 apples\n</plan>", "bad_line"),
        ("<plan>\n1 2. go\n</plan>", "bad_line"),
        # tags are ASCII: a look-alike letter makes no tag
        ("<pl\u0430n>\n1. go\n</plan>", "no_plan_block"),  # Cyrillic a
        ("<plan>\n1. go\n</\uff50lan>", "no_plan_block"),  # fullwidth p
        ("<plan >\n1. go\n</plan>", "no_plan_block"),  # no blanks inside plan tags
        ("<plan>1. go</plan\n>", "no_plan_block"),
    ],
)
def test_parse_failures_have_reasons(text, reason):
    with pytest.raises(BlueprintParseError) as err:
        parse_blueprint(text)
    assert err.value.reason == reason


def test_parse_limits():
    five = "<plan>\n" + "\n".join(f"{i}. step {i}" for i in range(1, 6)) + "\n</plan>"
    assert parse_blueprint(five, max_subgoals=5).num_subgoals == 5
    with pytest.raises(BlueprintParseError) as err:
        parse_blueprint(five, max_subgoals=4)
    assert err.value.reason == "too_many_subgoals"
    assert parse_blueprint("<plan>1. " + "x" * 20 + "</plan>", max_subgoal_chars=20).subgoals == ("x" * 20,)
    with pytest.raises(BlueprintParseError) as err:
        parse_blueprint("<plan>1. " + "x" * 21 + "</plan>", max_subgoal_chars=20)
    assert err.value.reason == "subgoal_too_long"
    with pytest.raises(ValueError, match="max_subgoals=0"):
        parse_blueprint("<plan>1. a</plan>", max_subgoals=0)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parse_never_raises_anything_else(text):
    for candidate in (text, f"<plan>{text}</plan>", f"<plan>\n1. {text}\n</plan>"):
        try:
            bp = parse_blueprint(candidate)
        except BlueprintParseError:
            continue
        assert 1 <= bp.num_subgoals <= 6
        assert all(g and len(g) <= 200 for g in bp.subgoals)


def test_blueprint_needs_a_subgoal():
    with pytest.raises(ValueError, match="at least one subgoal"):
        Blueprint(())


@pytest.mark.parametrize(
    "text",
    [
        "<sub_done>",
        "<SUB_DONE/>",
        "< sub_done >",
        "< Sub_Done / >",
        "<think>x</think><action>up</action><sub_done>",
        "<action>up</action>\n<SUB_DONE/>",
        "<action>up</action> <sub_done>",
        "done <SUB_DONE/>",
        "<think>maybe <action>up</action> then <sub_done></think> <sub_done>",
        "<action>up</action></action><sub_done>",  # a stray closing tag changes nothing
        "</think><sub_done>",
        "<action>take <sub_done></action> <sub_done>",
    ],
)
def test_declares_sub_done(text):
    assert declares_sub_done(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sub_done",
        "<sub done>",
        "</sub_done>",
        "<sub_done",
        "<think>I will not write <sub_done> yet</think><action>up</action>",
        "<action>take apple <sub_done></action>",
        "<action>take apple <SUB_DONE/> </ACTION>",
        "<think>unfinished <sub_done>",
        "<think>a</think><think>unfinished <sub_done>",
        "<action>up <sub_done>",  # an unclosed action hides the rest too
        "<action>up<action>down <sub_done></action>",  # still inside the (restarted) block
        "<think>x <think>y</action><sub_done>",  # only </think> closes a think block
        "<\u017fub_done>",  # U+017F long s folds onto "s" without re.ASCII
        "<sub_d\u043ene>",  # Cyrillic o
        "<\uff53ub_done>",  # fullwidth s
        "<action>up</act\u0131on><sub_done>",  # U+0131 dotless i: no closing tag, still inside the action
        "<think>x</thin\u212a><sub_done>",  # U+212A Kelvin sign folds onto "k" without re.ASCII
    ],
)
def test_does_not_declare_sub_done(text):
    assert not declares_sub_done(text)


def test_strip_sub_done():
    assert strip_sub_done("take apple <sub_done>") == "take apple"
    assert strip_sub_done("<SUB_DONE/> up ") == "up"
    assert strip_sub_done("go < sub_done / > to desk 1") == "go  to desk 1"
    assert strip_sub_done("  look  ") == "look"
    assert strip_sub_done("<sub_done><sub_done/>") == ""
    assert strip_sub_done("keep </sub_done> and <sub done>") == "keep </sub_done> and <sub done>"
    assert strip_sub_done("<\u017fub_done> up") == "<\u017fub_done> up"  # not a tag: kept


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["<", ">", "/", " ", "sub_done", "think", "action", "x", "\n"])).map("".join),
       st.text(max_size=40))
def test_sub_done_never_raises_and_ignores_blocks(junk, inner):
    assert isinstance(declares_sub_done(junk), bool)
    stripped = strip_sub_done(junk)
    assert stripped == stripped.strip() and len(stripped) <= len(junk)
    # whatever stands inside a closed think or action block cannot declare
    safe = inner.replace("<", "")
    assert not declares_sub_done(f"<think>{safe}<sub_done></think><action>{safe}<sub_done/></action>{safe}")
    assert declares_sub_done(f"<think>{safe}</think><action>{safe}</action><sub_done>")


def _cand(index, ret, won=False, steps=5):
    return BlueprintCandidate(index, Blueprint((f"goal {index}",)), ret, won, steps)


def test_best_blueprint_rule():
    # highest return wins
    assert best_blueprint([_cand(0, 1.0), _cand(1, 3.0), _cand(2, 2.0)]).index == 1
    # tie on return -> the won episode
    assert best_blueprint([_cand(0, 5.0, won=False), _cand(1, 5.0, won=True)]).index == 1
    # tie on return and won -> fewer env steps
    assert best_blueprint([_cand(0, 5.0, True, steps=7), _cand(1, 5.0, True, steps=4)]).index == 1
    # full tie -> lowest sample index, whatever the order given
    assert best_blueprint([_cand(3, 5.0, True, 4), _cand(1, 5.0, True, 4), _cand(2, 5.0, True, 4)]).index == 1
    assert best_blueprint([]) is None


def test_best_blueprint_random_ablation_is_seeded():
    cands = [_cand(i, float(i)) for i in range(6)]
    picks = [best_blueprint(cands, "random", random.Random(f"0|task|{s}")).index for s in range(40)]
    again = [best_blueprint(list(reversed(cands)), "random", random.Random(f"0|task|{s}")).index for s in range(40)]
    assert picks == again  # same seed -> same pick, independent of candidate order
    assert len(set(picks)) > 1  # not the best rule in disguise
    with pytest.raises(ValueError, match="seeded rng"):
        best_blueprint(cands, "random")
    with pytest.raises(ValueError, match="'best' or 'random'"):
        best_blueprint(cands, "worst")


def test_best_blueprint_rejects_nan():
    with pytest.raises(ValueError, match="candidate 1 has a non-finite"):
        best_blueprint([_cand(0, 1.0), _cand(1, float("nan"))])
