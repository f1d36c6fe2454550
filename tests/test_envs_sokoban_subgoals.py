"""The Sokoban subgoal grammar: parsing, consistent moves on hand-made boards, and the oracle (solver plan
cut into push subgoals, followed by the expert executor) solving generated levels in the optimal count."""

from __future__ import annotations

import pytest

from himac_verl.envs.sokoban.generator import generate_level
from himac_verl.envs.sokoban.level import Level
from himac_verl.envs.sokoban.subgoals import (
    BoardState,
    Subgoal,
    completes,
    consistent_moves,
    expert_move,
    parse_subgoal,
    plan_subgoals,
)


def test_parse_subgoal():
    assert parse_subgoal("push the box left") == Subgoal("push", "left")
    assert parse_subgoal("  Push the box  UP. ") == Subgoal("push", "up")
    assert parse_subgoal("walk to the top of the box") == Subgoal("walk", "up")
    assert parse_subgoal("walk to the right of the box").text() == "walk to the right of the box"
    for bad in ("push the box", "push the box north", "walk to the box", "push the box left twice", ""):
        assert parse_subgoal(bad) is None, bad


BOARD = """
######
#@___#
#_$__#
#___.#
#____#
######
"""


def test_consistent_moves_by_hand():
    state = BoardState.start(Level.from_text(BOARD))
    # push the box right: the push cell is left of the box (row 2, col 1), two moves away: down, then the push
    assert consistent_moves(state, Subgoal("push", "right")) == {"down"}
    assert expert_move(state, Subgoal("push", "right")) == "down"
    after, pushed = state.step("down")
    assert not pushed and consistent_moves(after, Subgoal("push", "right")) == {"right"}
    assert completes(after, "right", Subgoal("push", "right")) and not completes(after, "up", Subgoal("push", "right"))
    # push the box down: the push cell is above the box (row 1, col 2): right
    assert consistent_moves(state, Subgoal("push", "down")) == {"right"}
    # walk to the bottom of the box: two shortest paths around it (down-down-right or ...)
    assert consistent_moves(state, Subgoal("walk", "down")) == {"down"}
    # pushing the box up from below is blocked by nothing, but the push cell must be reachable: it is
    assert consistent_moves(state, Subgoal("push", "up")) == {"down"}


def test_impossible_subgoal_has_no_consistent_move():
    board = "#####\n#@$_#\n#__.#\n#####"
    state = BoardState.start(Level.from_text(board))
    # pushing left needs the cell right of the box (free, reachable via row 2); pushing right needs the
    # player's cell, where it stands; pushing up would need the wall below... the push cell is a wall
    assert consistent_moves(state, Subgoal("push", "right")) == {"right"}
    assert consistent_moves(state, Subgoal("push", "down")) == frozenset()  # push cell (above the box) is a wall


@pytest.mark.parametrize("seed", range(0, 400, 7))
def test_oracle_plan_and_expert_solve_generated_levels_optimally(seed):
    level, plan = generate_level(seed)
    state = BoardState.start(level)
    moves = 0
    for subgoal in plan_subgoals(level, plan):
        while True:
            move = expert_move(state, subgoal)
            assert move is not None
            done = completes(state, move, subgoal)
            state, _ = state.step(move)
            moves += 1
            if done:
                break
    assert state.box in level.targets and moves == len(plan)
