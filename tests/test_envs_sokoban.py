"""Sokoban: generated levels are solvable in the step limit, the solver's plan wins with the shaped
return computed by hand, invalid actions and wall moves, observations, bad task ids."""

from __future__ import annotations

import numpy as np
import pytest

from himac_verl.envs import TaskSpec, make_env
from himac_verl.envs.base import INVALID_ACTION_PENALTY
from himac_verl.envs.sokoban import (
    SPLIT_SIZE,
    GeneratorConfig,
    Level,
    SokobanEnv,
    count_pushes,
    generate_level,
    level_seed,
    render_rgb,
    solve,
)


def task(i, split="train"):
    return TaskSpec("sokoban", split, str(i))


@pytest.mark.parametrize("split", ["train", "test"])
def test_generated_levels_are_solvable_within_the_step_limit(split):
    cfg = GeneratorConfig()
    lengths = []
    for i in range(200):
        level, plan = generate_level(level_seed(split, i), cfg)
        assert (level.height, level.width, len(level.boxes)) == (6, 6, 1)
        assert level.boxes != level.targets
        fresh = solve(level, max_depth=15)  # an independent search from the level alone
        assert fresh is not None and len(fresh) == len(plan) <= 15
        assert count_pushes(level, list(plan)) >= 1
        lengths.append(len(plan))
    assert max(lengths) >= 5  # not only one-move levels


def test_larger_rooms_and_more_boxes():
    cfg = GeneratorConfig(height=8, width=7, num_boxes=2, max_steps=30)
    for seed in range(40):
        level, plan = generate_level(seed, cfg)
        assert (level.height, level.width, len(level.boxes), len(level.targets)) == (8, 7, 2, 2)
        assert solve(level, max_depth=30) is not None and len(plan) <= 30
    env = SokobanEnv(height=8, width=7, num_boxes=2, max_steps=30)
    first = env.reset(task(5))
    assert first.observation.text.count("\n") == 7 and first.info["num_boxes"] == 2
    for move in generate_level(level_seed("train", 5), cfg)[1]:
        step = env.step(move)
    assert step.won and step.done and step.score == 1.0


def test_levels_are_deterministic_and_splits_disjoint():
    env_a, env_b = SokobanEnv(), SokobanEnv()
    texts = [env_a.reset(task(i)).observation.text for i in range(30)]
    assert texts == [env_b.reset(task(i)).observation.text for i in range(30)]
    assert level_seed("train", 7) == 7 and level_seed("test", 7) == SPLIT_SIZE + 7
    test_texts = [env_a.reset(task(i, "test")).observation.text for i in range(30)]
    assert sum(a == b for a, b in zip(texts, test_texts)) < 5  # tiny rooms can coincide, seeds never do
    assert len(set(texts)) > 20


def test_solver_plan_replayed_through_the_env_wins_with_the_shaped_return():
    env = make_env("sokoban")
    for i in range(50):
        first = env.reset(task(i))
        _, plan = generate_level(level_seed("train", i), env.generator)
        assert first.info["optimal_steps"] == len(plan)
        rewards = []
        for move in plan:
            step = env.step(move)
            rewards.append(step.reward)
            assert step.is_action_valid and step.action == move
        # One box that starts off its target: every move costs 0.1; the push that puts the box on the
        # target also solves the level (+1 +10); an optimal plan never pushes it off again.
        assert step.done and step.won and step.score == 1.0
        assert sum(rewards) == pytest.approx(11.0 - 0.1 * len(plan))
        assert all(r == pytest.approx(-0.1) for r in rewards[:-1]) and rewards[-1] == pytest.approx(10.9)


def test_hand_made_levels_reward_by_hand():
    env = SokobanEnv()
    # Two boxes: on-target push (+1 -0.1), two walks (-0.1 each), solving push (+1 +10 -0.1) = 11.6.
    env.reset_level(Level.from_text("######\n#@$._#\n#_$._#\n######"))
    rewards = [env.step(a).reward for a in ("right", "left", "down")]
    last = env.step("right")
    assert rewards == pytest.approx([0.9, -0.1, -0.1]) and last.reward == pytest.approx(10.9)
    assert sum(rewards) + last.reward == pytest.approx(11.6) and last.won and last.score == 1.0
    # A box pushed off its target: -1 -0.1; a push against another box is a valid no-op costing 0.1.
    env.reset_level(Level.from_text("########\n#@*__$.#\n########"))
    off = env.step("right")
    assert off.reward == pytest.approx(-1.1) and off.score == 0.0 and off.info["pushed"]
    assert env.step("right").reward == pytest.approx(-0.1)
    blocked = env.step("right")
    assert blocked.reward == pytest.approx(-0.1) and blocked.is_action_valid and not blocked.info["moved"]
    assert blocked.observation.text == "########\n#_.@$$.#\n########"


def test_a_move_into_a_wall_is_valid_and_changes_nothing():
    env = SokobanEnv()
    start = env.reset_level(Level.from_text("######\n#@$_.#\n######")).observation
    step = env.step("up")
    assert step.is_action_valid and step.action == "up" and not step.info["moved"]
    assert step.reward == pytest.approx(-0.1) and not step.done
    assert step.observation.anchor == start.anchor


@pytest.mark.parametrize("bad", ["jump", "", "   ", None, "up" * 200, "\ud800\u0000☃", "<action></action>", "north"])
def test_invalid_actions_are_flagged_and_leave_the_state(bad):
    env = make_env("sokoban")
    start = env.reset(task(3)).observation
    step = env.step(bad)
    # a no-op step: the step's -0.1 plus the invalid-action penalty (verl-agent's -0.2 in all)
    assert (step.is_action_valid, step.action) == (False, None)
    assert step.reward == pytest.approx(-0.1 + INVALID_ACTION_PENALTY) and step.penalty == INVALID_ACTION_PENALTY
    assert step.observation.anchor == start.anchor and not step.done and step.info["steps"] == 1


def test_invalid_steps_count_toward_max_steps():
    env = make_env("sokoban")
    env.reset(task(3))
    steps = [env.step("dance") for _ in range(15)]
    assert [s.done for s in steps] == [False] * 14 + [True]
    assert not steps[-1].won and steps[-1].score == 0.0
    with pytest.raises(RuntimeError, match="after the episode ended"):
        env.step("up")


def test_raw_model_output_is_projected():
    env = SokobanEnv()
    env.reset_level(Level.from_text("######\n#@$_.#\n######"))
    assert env.step("Let me push. <action>Move Right.</action>").action == "right"


def test_observation_modes_and_renderer():
    text_env, image_env, both_env = SokobanEnv(), SokobanEnv(observation="image"), SokobanEnv(observation="both")
    t, i, b = (e.reset(task(11)).observation for e in (text_env, image_env, both_env))
    assert t.image is None and t.text == t.anchor
    assert i.text == "" and i.anchor == t.anchor and i.image.shape == (256, 256, 3) and i.image.dtype == np.uint8
    assert b.text == t.text and np.array_equal(b.image, i.image)
    small = SokobanEnv(observation="image", image_px=None).reset(task(11)).observation.image
    assert small.shape == (96, 96, 3) and np.array_equal(small, render_rgb(t.text, px=16))
    # One tile per cell: the player's tile differs from a floor tile, walls from floor.
    img = render_rgb("#_\n@$", px=8)
    assert img.shape == (16, 16, 3)
    wall, floor, player, box = img[:8, :8], img[:8, 8:], img[8:, :8], img[8:, 8:]
    assert len({a.tobytes() for a in (wall, floor, player, box)}) == 4
    moved = both_env.step("left").observation
    assert np.array_equal(moved.image, b.image) == (moved.anchor == b.anchor)


def _tile_colours(img: np.ndarray) -> set[bytes]:
    return {px.tobytes() for px in img.reshape(-1, 3)}


def test_images_are_crisp_tiles_of_the_same_colours():
    from himac_verl.envs.sokoban.render import TILE_ORDER, tiles

    grid = SokobanEnv().reset(task(11)).observation.text
    img = render_rgb(grid, image_px=256)
    assert img.shape == (256, 256, 3) and img.dtype == np.uint8 and img.flags.c_contiguous
    tile_colours = {sym: _tile_colours(tiles(43)[i]) for i, sym in enumerate(TILE_ORDER)}
    # nearest-neighbour: only the tile colours, no blended edge pixels
    assert _tile_colours(img) <= set().union(*tile_colours.values())
    # crisp tiles: the inside of each cell (256/6 px, 3 px kept clear of the edges) holds only its own
    # tile's colours, and the cell's centre pixel is the tile's centre pixel (walls: brick or mortar)
    side = 256 / 6
    for r, row in enumerate(grid.split("\n")):
        for c, sym in enumerate(row):
            y0, y1, x0, x1 = (round(v) for v in (r * side + 3, (r + 1) * side - 3, c * side + 3, (c + 1) * side - 3))
            assert _tile_colours(img[y0:y1, x0:x1]) <= tile_colours[sym], (r, c, sym)
            if sym != "#":
                centre = img[int((r + 0.5) * side), int((c + 0.5) * side)]
                assert np.array_equal(centre, tiles(43)[TILE_ORDER.index(sym)][21, 21]), (r, c, sym)
    # non-square boards keep square cells: the shorter side is image_px
    assert render_rgb("#####\n#@$.#\n#####", image_px=256).shape == (256, 427, 3)
    assert SokobanEnv(height=8, width=7, observation="image").reset(task(5)).observation.image.shape == (293, 256, 3)
    with pytest.raises(ValueError, match="image_px"):
        SokobanEnv(image_px=8)


def qwen2_5_vl_visual_tokens(image: np.ndarray, **processor_options) -> int:
    """Merged visual tokens Qwen2.5-VL's image processor gives an image (its published defaults, offline)."""
    from transformers import Qwen2VLImageProcessorPil

    options = dict(patch_size=14, merge_size=2, temporal_patch_size=2, min_pixels=56 * 56, max_pixels=28 * 28 * 1280)
    options.update(processor_options)
    processor = Qwen2VLImageProcessorPil(**options)
    from PIL import Image

    grid_thw = processor(images=[Image.fromarray(image)], return_tensors="np")["image_grid_thw"]
    return int(np.prod(grid_thw[0])) // options["merge_size"] ** 2


def test_default_image_is_81_qwen_visual_tokens():
    """256x256 -> 252x252 -> 18x18 patches -> 81 tokens after the 2x2 merge; the old 96x96 -> 84x84 -> 9."""
    default = SokobanEnv(observation="image").reset(task(11)).observation.image
    old = SokobanEnv(observation="image", image_px=None).reset(task(11)).observation.image
    assert min(default.shape[:2]) >= 256 and old.shape == (96, 96, 3)
    assert qwen2_5_vl_visual_tokens(default) == 81
    assert qwen2_5_vl_visual_tokens(old) == 9
    # the tiny test model's processor (tests/conftest.py: max_pixels 28*28*64) shrinks it to 224x224: 64
    assert qwen2_5_vl_visual_tokens(default, min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 64) == 64


@pytest.mark.parametrize(
    "spec, match",
    [
        (TaskSpec("sokoban", "valid", "1"), "split must be one of"),
        (TaskSpec("sokoban", "train", "-1"), "decimal int"),
        (TaskSpec("sokoban", "train", "abc"), "decimal int"),
        (TaskSpec("sokoban", "train", str(SPLIT_SIZE)), "decimal int"),
        (TaskSpec("sokoban", "train", "١٢"), "decimal int"),  # Arabic-Indic digits
        (TaskSpec("alfworld", "train", "1"), "task.env must be 'sokoban'"),
    ],
)
def test_bad_tasks_are_named(spec, match):
    with pytest.raises(ValueError, match=match):
        SokobanEnv().reset(spec)


def test_bad_options_and_misuse_are_named():
    with pytest.raises(ValueError, match="observation"):
        SokobanEnv(observation="rgb")
    with pytest.raises(ValueError, match="num_boxes"):
        SokobanEnv(num_boxes=9)
    with pytest.raises(ValueError, match="height"):
        SokobanEnv(height=3)
    with pytest.raises(RuntimeError, match="before reset"):
        SokobanEnv().step("up")
    with pytest.raises(ValueError, match="unknown symbol"):
        Level.from_text("#####\n#@$X#\n#####")


def test_solver_on_known_levels():
    assert solve(Level.from_text("######\n#@$_.#\n######")) == ["right", "right"]
    assert solve(Level.from_text("#####\n#$_.#\n#@__#\n#####")) is None  # box in a corner
    level = Level.from_text("######\n#____#\n#@$_.#\n#____#\n######")
    assert solve(level, max_depth=1) is None and solve(level, max_depth=2) == ["right", "right"]


def test_min_moves_is_a_difficulty_floor():
    env = SokobanEnv(min_moves=5)
    for i in range(30):
        first = env.reset(task(i))
        assert 5 <= first.info["optimal_steps"] <= 15
    with pytest.raises(ValueError, match="min_moves"):
        GeneratorConfig(min_moves=16)
