"""The text parsers the agent loop applies to model outputs run in linear time on adversarial inputs.

Every parser (``parse_blueprint``, ``extract_action``, ``declares_sub_done``, ``strip_sub_done``) gets 1 MB
inputs built to make a backtracking regex go quadratic (repeated opening tags without a closing tag,
repeated closing tags, ``"<"`` followed by blanks, a line of 1M blanks in a plan block, alternating
think/action tags, nested opening tags, many numbered markers on one line ...). Each case checks:

- the answer (so the parser really read the whole input);
- speed: best of 3 runs on 1 MB under ``MAX_SECONDS_1MB`` (2 s on a shared 2-core machine; the linear
  parsers take tens of milliseconds, the old regexes took minutes);
- linearity: time(1 MB) / time(64 KB) < ``MAX_RATIO`` (40; linear is 16). The 64 KB time is the mean of
  16 calls (the same amount of text as one 1 MB call), best of 3, with the garbage collector off, so
  that timer noise on sub-millisecond runs does not decide the ratio.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

import pytest

from himac_verl.agent.blueprint import BlueprintParseError, declares_sub_done, parse_blueprint, strip_sub_done
from himac_verl.envs.projection import extract_action

BIG = 1 << 20  # 1 MB
SMALL = 1 << 16  # 64 KB
MAX_SECONDS_1MB = 2.0
MAX_RATIO = 40.0
REPS = 3
SMALL_CALLS = BIG // SMALL


def _blueprint(text: str) -> tuple[str, ...] | str:
    """The subgoals, or the failure reason."""
    try:
        return parse_blueprint(text).subgoals
    except BlueprintParseError as err:
        return err.reason


def _rep(unit: str, size: int, head: str = "", tail: str = "") -> str:
    """``head + unit * k + tail`` with k chosen so that the whole is about ``size`` characters."""
    return head + unit * max(1, (size - len(head) - len(tail)) // len(unit)) + tail


def _markers(size: int, broken: bool = False) -> str:
    """One plan line ``1. a 2. a 3. a ...`` (``broken``: ``1. a 1. a ...``) of about ``size`` characters."""
    parts, total, i = [], 0, 1
    while total < size:
        part = f"{1 if broken else i}. a "
        parts.append(part)
        total += len(part)
        i += 1
    return "<plan>" + "".join(parts) + "</plan>"


# (id, parser, make(size) -> text, expected answer at any size, or a function of the text giving it)
CASES: list[tuple[str, Callable, Callable[[int], str], object]] = [
    # --- parse_blueprint ---
    ("plan/open-tags", _blueprint, lambda n: _rep("<plan>", n), "no_plan_block"),
    ("plan/open-tags-1.", _blueprint, lambda n: _rep("<plan>1. ", n), "no_plan_block"),
    ("plan/close-tags", _blueprint, lambda n: _rep("</plan>", n), "no_plan_block"),
    ("plan/nested-open", _blueprint, lambda n: _rep("<plan>1. x ", n, tail="<plan>1. a</plan>"), ("a",)),
    ("plan/lt-blanks", _blueprint, lambda n: _rep(" ", n, head="<plan><"), "no_plan_block"),
    ("plan/lt-repeated", _blueprint, lambda n: _rep("< ", n, head="<plan>", tail="</plan>"), "bad_line"),
    ("plan/blank-line", _blueprint, lambda n: _rep(" ", n, head="<plan>", tail="</plan>"), "empty_plan"),
    ("plan/blank-lines", _blueprint, lambda n: _rep(" \n", n, head="<plan>", tail="</plan>"), "empty_plan"),
    ("plan/blanks-in-subgoal", _blueprint, lambda n: _rep(" ", n, head="<plan>1. x", tail="y</plan>"),
     "subgoal_too_long"),
    ("plan/blanks-after-number", _blueprint, lambda n: _rep(" ", n, head="<plan>1", tail="x</plan>"), "bad_line"),
    ("plan/blanks-after-separator", _blueprint, lambda n: _rep(" ", n, head="<plan>1.", tail="x</plan>"), ("x",)),
    ("plan/digits", _blueprint, lambda n: _rep("1", n, head="<plan>", tail="</plan>"), "bad_line"),
    ("plan/markers-one-line", _blueprint, _markers, "too_many_subgoals"),
    ("plan/markers-broken", _blueprint, lambda n: _markers(n, broken=True), "subgoal_too_long"),
    # --- extract_action ---
    ("action/open-tags", extract_action, lambda n: _rep("<action>", n), None),
    ("action/close-tags", extract_action, lambda n: _rep("</action>", n), None),
    ("action/nested-open", extract_action, lambda n: _rep("<action>x", n, tail="<action>up</action>"), "up"),
    ("action/lt-blanks", extract_action, lambda n: _rep(" ", n, head="<"), None),
    ("action/lt-blanks-name", extract_action, lambda n: _rep(" ", n, head="<", tail="action" + " " * 4096), None),
    ("action/lt-slash-blanks", extract_action, lambda n: _rep(" ", n, head="</"), None),
    ("action/lt-repeated", extract_action, lambda n: _rep("< ", n), None),
    ("action/empty-blocks", extract_action, lambda n: _rep("<action></action>", n, tail="<action>up</action>"), "up"),
    ("action/think-action", extract_action, lambda n: _rep("<think><action>", n), None),
    # --- declares_sub_done ---
    ("sub_done/open-think", declares_sub_done, lambda n: _rep("<think>", n, tail="<sub_done>"), False),
    ("sub_done/close-tags", declares_sub_done, lambda n: _rep("</think></action>", n, tail="<sub_done>"), True),
    ("sub_done/alternating", declares_sub_done, lambda n: _rep("<think></think><action></action>", n,
                                                                tail="<sub_done>"), True),
    ("sub_done/alternating-open", declares_sub_done, lambda n: _rep("<think><action>", n, tail="<sub_done>"),
     False),
    ("sub_done/nested-action", declares_sub_done, lambda n: _rep("<action><sub_done>", n, tail="</action>"),
     False),
    ("sub_done/lt-blanks", declares_sub_done, lambda n: _rep(" ", n, head="<"), False),
    ("sub_done/lt-blanks-name", declares_sub_done, lambda n: _rep(" ", n, head="<sub_done"), False),
    ("sub_done/lt-repeated", declares_sub_done, lambda n: _rep("< ", n, tail="<sub_done/>"), True),
    # --- strip_sub_done ---
    ("strip/tags", strip_sub_done, lambda n: _rep("<sub_done>", n, head="take apple "), "take apple"),
    ("strip/open-no-close", strip_sub_done, lambda n: _rep("<sub_done", n), str.strip),
    ("strip/name-blanks", strip_sub_done, lambda n: _rep(" ", n, head="up <sub_done"), str.strip),
    ("strip/lt-blanks", strip_sub_done, lambda n: _rep(" ", n, head="<", tail="sub_done" + " " * 4096), str.strip),
    ("strip/lt-repeated", strip_sub_done, lambda n: _rep("< ", n, tail="x< sub_done / >"),
     lambda text: text[:-len("< sub_done / >")].strip()),
]


def _best_time(parser: Callable, text: str, calls: int) -> float:
    """Best of ``REPS`` of the mean time of ``calls`` calls, garbage collector off."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        best = float("inf")
        for _ in range(REPS):
            start = time.perf_counter()
            for _ in range(calls):
                parser(text)
            best = min(best, (time.perf_counter() - start) / calls)
        return best
    finally:
        if enabled:
            gc.enable()


@pytest.mark.timeout(60)  # the old quadratic parsers would run for minutes: fail instead of hanging
@pytest.mark.parametrize("name, parser, make, expected", CASES, ids=[c[0] for c in CASES])
def test_parser_is_fast_and_linear(name, parser, make, expected):
    big, small = make(BIG), make(SMALL)
    assert BIG * 0.9 <= len(big) <= BIG * 1.1 and SMALL * 0.9 <= len(small) <= SMALL * 1.3
    for text in (big, small):
        want = expected(text) if callable(expected) else expected
        out = parser(text)
        assert out == want, (name, str(out)[:80], str(want)[:80])
    t_big = _best_time(parser, big, 1)
    t_small = _best_time(parser, small, SMALL_CALLS)
    ratio = t_big / max(t_small, 1e-9)
    print(f"{name}: 1MB {t_big * 1e3:.2f} ms, 64KB {t_small * 1e3:.3f} ms, ratio {ratio:.1f}")
    assert t_big < MAX_SECONDS_1MB, f"{name}: {t_big:.2f} s on 1 MB"
    assert ratio < MAX_RATIO, f"{name}: time(1MB)/time(64KB) = {ratio:.1f} (1MB {t_big:.4f} s, 64KB {t_small:.5f} s)"


def test_cases_cover_every_parser():
    parsers = {c[1] for c in CASES}
    assert parsers == {_blueprint, extract_action, declares_sub_done, strip_sub_done}
