"""The main job's setting (``+preset=sokoban_learning``: HiMAC co-evolution on Sokoban 6x6 with the project's
``sokoban_agent`` starting model) end to end through verl on CPU, then the eval CLI on the checkpoint it saved.

1. Three phase-A steps with greedy validations before and after on the same held-out levels
   (``himac.eval_log_file``): the real model writes tagged plans (no parse failures in validation),
   planner advantages and grad norms are non-zero at every step, and the learning report (``learning.json``:
   before -> after, McNemar) matches the episode log. Whether held-out success RISES is not asserted here:
   on this setting it does not yet (README, "Learning": measured runs), and a test must not pretend.
2. ``python -m himac_verl.eval run --model <checkpoint>/global_step_N --override +preset=sokoban_learning``
   (verl's saved actor, with the ``hf_model`` folder the preset saves) replays the same levels with the
   trained weights: its per-level outcomes agree with the trainer's final validation.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import read_metrics, run_trainer, wait_named_actors_gone

from himac_verl.eval.episode_log import read_episodes
from himac_verl.eval.learning import paired_comparison

pytestmark = pytest.mark.ray

STEPS = 3  # phase A (planner) steps: the preset's phase length
LEVELS = 32  # held-out test levels, before and after
SEED = 0


def _train(tmp: Path, model_dir: str) -> tuple[Path, list[dict]]:
    metrics, log = tmp / "metrics.jsonl", tmp / "eval.jsonl"
    run_trainer([
        "mode=cpu", "+preset=sokoban_learning",
        f"actor_rollout_ref.model.path={model_dir}",
        f"trainer.total_training_steps={STEPS}",
        f"trainer.test_freq={STEPS}",
        f"himac.data.val_size={LEVELS}",
        f"himac.val_levels_between={LEVELS}",
        f"himac.data.seed={SEED}",
        "trainer.logger=[console]",
        f"trainer.default_local_dir={tmp / 'ckpt'}",
        f"himac.metrics_file={metrics}",
        f"himac.eval_log_file={log}",
    ])
    _, steps = read_metrics(metrics)
    return log, steps


def _eval(model: str, out: Path) -> dict[str, bool]:
    from himac_verl.eval.cli import main

    argv = ["run", "--model", model, "--env", "sokoban", "--method", "himac", "--limit", str(LEVELS),
            "--seed", str(SEED), "--out", str(out), "--override", "+preset=sokoban_learning"]
    try:
        assert main(argv) == 0
    finally:
        wait_named_actors_gone()
    return {r.task_id: r.won for r in read_episodes(out / "episodes.jsonl")}


def test_main_setting_trains_validates_and_its_checkpoint_evaluates(ray_session, sokoban_agent_dir, tmp_path):
    log, steps = _train(tmp_path, sokoban_agent_dir)
    assert [s["step"] for s in steps] == list(range(1, STEPS + 1))
    for s in steps:
        assert s["himac/phase"] == 0 and s["himac/failed_groups"] == 0
        assert s["himac/planner/parse_failure_rate"] < 0.5, s
        assert s["himac/adv/macro/max"] > 0 > s["himac/adv/macro/min"], s
        assert math.isfinite(s["actor/grad_norm"]) and s["actor/grad_norm"] > 0, s

    records = read_episodes(log)
    paired = paired_comparison(records)
    assert (paired.step_before, paired.step_after, paired.n) == (0, STEPS, LEVELS)
    assert all("parse_failure" not in r.flags for r in records if r.extra["global_step"] == 0)
    print(f"main setting: {paired.line()}")
    report = json.loads((log.parent / "learning.json").read_text())
    assert (report["paired"]["b"], report["paired"]["c"]) == (paired.b, paired.c)
    assert (log.parent / "learning.png").read_bytes()[:4] == b"\x89PNG"

    # the eval CLI on verl's checkpoint folder: the trained weights, on the same levels, greedy
    after = {r.task_id: r.won for r in records if r.extra["global_step"] == STEPS}
    trained = _eval(str(tmp_path / "ckpt" / f"global_step_{STEPS}"), tmp_path / "eval_ckpt")
    assert trained.keys() == after.keys()
    agree = sum(trained[t] == after[t] for t in after)
    assert agree >= LEVELS - 2, (agree, LEVELS)  # other batch compositions can flip a near-tie
