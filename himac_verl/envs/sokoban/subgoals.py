"""A checkable subgoal grammar for Sokoban with one box, so "the executor follows its subgoal" is computed.

Two subgoal forms (lower case; a trailing full stop is ignored):

- ``push the box <dir>`` (dir: up, down, left, right): ONE push of the box in that direction. The executor
  first walks to the push cell (the box's neighbour opposite to <dir>), then pushes. Completed by the move
  that pushes the box in <dir>.
- ``walk to the <side> of the box`` (side: left, right, top, bottom): reach the box's neighbour on that
  side without pushing it. Completed by the move that arrives there.

A move is CONSISTENT with the active subgoal in a state when it makes progress: it is the push itself
when the player stands on the push cell, otherwise a step along a shortest path (walls and the box as
obstacles) to the subgoal's cell. A subgoal whose cell is a wall or unreachable admits no consistent move
(the plan, not the executor, is wrong there). :func:`plan_subgoals` cuts a solver plan into push subgoals,
one per push: the blueprints of the warm-start data and of the oracle planner.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass

from himac_verl.envs.sokoban.level import DIRECTIONS, Level, move

SIDES: dict[str, str] = {"left": "left", "right": "right", "top": "up", "bottom": "down"}  # side -> offset dir
OPPOSITE: dict[str, str] = {"up": "down", "down": "up", "left": "right", "right": "left"}
_PUSH_RE = re.compile(r"push the box (up|down|left|right)", re.ASCII)
_WALK_RE = re.compile(r"walk to the (left|right|top|bottom) of the box", re.ASCII)


@dataclass(frozen=True)
class Subgoal:
    kind: str  # "push" | "walk"
    direction: str  # push: the push direction; walk: the offset direction of the side (top -> up)

    def text(self) -> str:
        if self.kind == "push":
            return f"push the box {self.direction}"
        side = next(s for s, d in SIDES.items() if d == self.direction)
        return f"walk to the {side} of the box"


def parse_subgoal(text: str) -> Subgoal | None:
    """The subgoal a text states, or None when it is outside the grammar."""
    norm = " ".join(str(text).lower().split()).rstrip(".")
    m = _PUSH_RE.fullmatch(norm)
    if m:
        return Subgoal("push", m.group(1))
    m = _WALK_RE.fullmatch(norm)
    if m:
        return Subgoal("walk", SIDES[m.group(1)])
    return None


@dataclass(frozen=True)
class BoardState:
    """The movable part of a one-box position (walls and size come from the level)."""

    level: Level
    box: int
    player: int

    @classmethod
    def start(cls, level: Level) -> BoardState:
        if len(level.boxes) != 1:
            raise ValueError(f"the subgoal grammar covers one-box levels, got {len(level.boxes)} boxes")
        return cls(level, next(iter(level.boxes)), level.player)

    def step(self, direction: str) -> tuple[BoardState, bool]:
        """The state after a move and whether it pushed the box."""
        new_player, box_from, box_to = move(self.level.walls, {self.box}, self.player, self.level.deltas()[direction])
        pushed = box_from is not None
        return BoardState(self.level, box_to if pushed else self.box, new_player), pushed


def goal_cell(state: BoardState, subgoal: Subgoal) -> int:
    """The cell the player must reach: the push cell (push) or the named side (walk)."""
    deltas = state.level.deltas()
    if subgoal.kind == "push":
        return state.box - deltas[subgoal.direction]
    return state.box + deltas[subgoal.direction]


def _distances(state: BoardState, goal: int) -> dict[int, int]:
    """BFS distance to ``goal`` from every cell the player can walk (box and walls block)."""
    blocked = set(state.level.walls) | {state.box}
    if goal in blocked:
        return {}
    dist, queue = {goal: 0}, deque([goal])
    deltas = tuple(state.level.deltas().values())
    while queue:
        cell = queue.popleft()
        for d in deltas:
            nxt = cell + d
            if nxt not in blocked and nxt not in dist:
                dist[nxt] = dist[cell] + 1
                queue.append(nxt)
    return dist


def consistent_moves(state: BoardState, subgoal: Subgoal) -> frozenset[str]:
    """The moves that make progress on ``subgoal`` from ``state`` (empty: no progress is possible, or a
    walk subgoal already reached)."""
    goal = goal_cell(state, subgoal)
    if subgoal.kind == "push" and state.player == goal:
        after, pushed = state.step(subgoal.direction)
        return frozenset({subgoal.direction}) if pushed else frozenset()
    dist = _distances(state, goal)
    here = dist.get(state.player)
    if here is None or here == 0:
        return frozenset()
    deltas = state.level.deltas()
    return frozenset(d for d in DIRECTIONS if dist.get(state.player + deltas[d]) == here - 1)


def completes(before: BoardState, direction: str, subgoal: Subgoal) -> bool:
    """Whether the move ``direction`` from ``before`` completes ``subgoal``."""
    after, pushed = before.step(direction)
    if subgoal.kind == "push":
        return pushed and direction == subgoal.direction
    return not pushed and after.player == goal_cell(before, subgoal)


def expert_move(state: BoardState, subgoal: Subgoal) -> str | None:
    """A deterministic consistent move (first in DIRECTIONS order), or None when there is none."""
    moves = consistent_moves(state, subgoal)
    return next((d for d in DIRECTIONS if d in moves), None)


def plan_subgoals(level: Level, plan: list[str] | tuple[str, ...]) -> list[Subgoal]:
    """A solver plan cut into push subgoals, one per push, in order."""
    state, out = BoardState.start(level), []
    for direction in plan:
        state, pushed = state.step(direction)
        if pushed:
            out.append(Subgoal("push", direction))
    return out


__all__ = ["BoardState", "Subgoal", "completes", "consistent_moves", "expert_move", "goal_cell", "parse_subgoal",
           "plan_subgoals", "SIDES"]
