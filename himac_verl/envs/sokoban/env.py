"""``SokobanEnv``: seeded levels, text/image observations, the shaped gym-sokoban reward.

Reward per step (gym-sokoban's shaping, verl-agent's default): -0.1, plus 1 when a push puts a box on a
target, minus 1 when a push takes one off, plus 10 on the push that solves the level. An action that does
not project onto up/down/left/right is a no-op step: it changes nothing and costs the step's -0.1 plus
``INVALID_ACTION_PENALTY`` (-0.1), -0.2 in all, as in verl-agent (gym-sokoban charges the no-op move, the
trainer the invalid output).

A move into a wall (or a push against a wall or a second box) is a VALID action with no effect: it is a
legal word of the action set, as in gym-sokoban, and it costs the ordinary -0.1 step penalty. "Invalid"
is kept for output the env cannot read, so the invalid-action rate measures format errors, not
planning mistakes; the state not changing is feedback enough (``info["moved"]`` is False).

Tasks: ``TaskSpec("sokoban", split, task_id)`` with ``task_id`` a decimal int in ``[0, SPLIT_SIZE)``. The
level's generator seed is ``SPLIT_SEED_OFFSET[split] + task_id``: train uses seeds ``[0, 1e9)``, test
``[1e9, 2e9)``, so the splits never share a level. The room options (size, boxes) are part of the level
too: the same task id under other options is another level.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from himac_verl.envs.base import (INVALID_ACTION_PENALTY, SUCCESS_REWARD, AgentEnv, Observation, ResetResult, StepResult,
                                  TaskSpec)
from himac_verl.envs.projection import action_text, project_sokoban
from himac_verl.envs.sokoban.generator import GeneratorConfig, generate_level
from himac_verl.envs.sokoban.level import (BOX, BOX_ON_TARGET, FLOOR, LEGEND_TEXT, PLAYER, PLAYER_ON_TARGET, TARGET, WALL,
                                           Level, move)
from himac_verl.envs.sokoban.render import render_rgb

STEP_PENALTY = -0.1
BOX_ON_TARGET_REWARD = 1.0
BOX_OFF_TARGET_PENALTY = -1.0
SPLIT_SIZE = 1_000_000_000
SPLIT_SEED_OFFSET: dict[str, int] = {"train": 0, "test": SPLIT_SIZE}
OBSERVATION_MODES = ("text", "image", "both")


def level_seed(split: str, task_id: str | int) -> int:
    """The generator seed of a task (see the module docstring for the ranges)."""
    if split not in SPLIT_SEED_OFFSET:
        raise ValueError(f"sokoban task split must be one of {sorted(SPLIT_SEED_OFFSET)}, got {split!r}")
    text = str(task_id).strip()
    if not text.isdigit() or not text.isascii() or int(text) >= SPLIT_SIZE:
        raise ValueError(f"sokoban task_id must be a decimal int in [0, {SPLIT_SIZE}), got {task_id!r}")
    return SPLIT_SEED_OFFSET[split] + int(text)


class SokobanEnv(AgentEnv):
    """One Sokoban instance. Options: room size, boxes, step limit, observation kind, image size.

    Images (``observation="image"|"both"``): ``image_px`` is the side of the image of a square board (the
    shorter side otherwise), 256 by default (81 Qwen2.5-VL visual tokens for 6x6); ``image_px=None`` gives
    tiles of ``tile_px`` px (6x6 cells of 16 px: 96x96, 9 visual tokens)."""

    name = "sokoban"
    cheap_to_build = True

    def __init__(self, height: int = 6, width: int = 6, num_boxes: int = 1, max_steps: int = 15,
                 observation: str = "text", tile_px: int = 16, image_px: int | None = 256,
                 **generator_options: Any) -> None:
        if observation not in OBSERVATION_MODES:
            raise ValueError(f"SokobanEnv observation must be one of {OBSERVATION_MODES}, got {observation!r}")
        if not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"SokobanEnv max_steps must be an int >= 1, got {max_steps!r}")
        self.max_steps = max_steps
        self.observation = observation
        if image_px is not None and (not isinstance(image_px, int) or image_px < 28):
            raise ValueError(f"SokobanEnv image_px must be an int >= 28 or None, got {image_px!r}")
        self.tile_px = tile_px
        self.image_px = image_px
        self.generator = GeneratorConfig(height=height, width=width, num_boxes=num_boxes, max_steps=max_steps,
                                         **generator_options)
        self.level: Level | None = None
        self._done = True

    @staticmethod
    def action_format() -> str:
        return "one of up, down, left, right"

    @classmethod
    def extra_option_names(cls) -> tuple[str, ...]:
        """The level generator's settings, passed through ``**generator_options``."""
        return tuple(f.name for f in dataclasses.fields(GeneratorConfig)
                     if f.name not in ("height", "width", "num_boxes", "max_steps"))

    @classmethod
    def worst_return(cls, max_steps: int, num_boxes: int = 1, **options: Any) -> float:
        """Every step costs at least -0.2 (an invalid no-op) unless it is a push; pushes change the box
        reward by +-1, and boxes can leave targets at most once more than they reach them (at most
        ``num_boxes`` start on a target), so the box total is >= -num_boxes."""
        return max_steps * (STEP_PENALTY + INVALID_ACTION_PENALTY) - num_boxes * abs(BOX_OFF_TARGET_PENALTY)

    # -- episode --------------------------------------------------------------------------------------

    def reset(self, task: TaskSpec) -> ResetResult:
        if task.env != self.name:
            raise ValueError(f"SokobanEnv.reset: task.env must be {self.name!r}, got {task.env!r}")
        seed = level_seed(task.split, task.task_id)
        level, plan = generate_level(seed, self.generator)
        return self.reset_level(level, optimal_steps=len(plan), task=task)

    def reset_level(self, level: Level, optimal_steps: int | None = None, task: TaskSpec | None = None) -> ResetResult:
        """Start an episode on a given level (hand-made levels in tests; ``reset`` goes through here)."""
        self.level = level
        self._player = level.player
        self._boxes = set(level.boxes)
        self._on_target = len(self._boxes & level.targets)
        self._steps = 0
        self._done = False
        self._deltas = level.deltas()
        base = [FLOOR] * (level.height * level.width)
        for c in level.walls:
            base[c] = WALL
        for c in level.targets:
            base[c] = TARGET
        self._base = base
        info = {"legend": LEGEND_TEXT, "level_seed": level.seed, "optimal_steps": optimal_steps,
                "num_boxes": len(level.boxes), "task_uid": task.uid if task else None}
        return ResetResult(self._observe(), "Push every box onto a target.", "sokoban", info)

    def step(self, action: str | None) -> StepResult:
        if self.level is None:
            raise RuntimeError("SokobanEnv.step called before reset")
        if self._done:
            raise RuntimeError("SokobanEnv.step called after the episode ended; call reset")
        self._steps += 1
        direction = project_sokoban(action_text(action))
        moved = pushed = False
        if direction is None:
            reward = STEP_PENALTY + INVALID_ACTION_PENALTY
        else:
            reward = STEP_PENALTY
            new_player, box_from, box_to = move(self.level.walls, self._boxes, self._player, self._deltas[direction])
            moved = new_player != self._player
            self._player = new_player
            if box_from is not None:
                pushed = True
                self._boxes.discard(box_from)
                self._boxes.add(box_to)
                targets = self.level.targets
                was, now = box_from in targets, box_to in targets
                if now and not was:
                    self._on_target += 1
                    reward += BOX_ON_TARGET_REWARD
                elif was and not now:
                    self._on_target -= 1
                    reward += BOX_OFF_TARGET_PENALTY
        num_boxes = len(self._boxes)
        won = self._on_target == num_boxes
        if won:
            reward += SUCCESS_REWARD
        self._done = won or self._steps >= self.max_steps
        info = {"moved": moved, "pushed": pushed, "boxes_on_target": self._on_target, "steps": self._steps}
        return StepResult(self._observe(), reward, self._done, won, direction is not None, direction,
                          self._on_target / num_boxes, info)

    # -- observations ---------------------------------------------------------------------------------

    def grid_text(self) -> str:
        """The current grid (also the anchor): see ``level.LEGEND`` for the symbols."""
        cells = self._base.copy()
        for c in self._boxes:
            cells[c] = BOX_ON_TARGET if cells[c] == TARGET else BOX
        p = self._player
        cells[p] = PLAYER_ON_TARGET if cells[p] == TARGET else PLAYER
        w = self.level.width
        return "\n".join(["".join(cells[i:i + w]) for i in range(0, len(cells), w)])

    def _observe(self) -> Observation:
        grid = self.grid_text()
        image = render_rgb(grid, self.tile_px, self.image_px) if self.observation != "text" else None
        text = grid if self.observation != "image" else ""
        return Observation(text=text, anchor=grid, image=image)

