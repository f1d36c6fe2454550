"""The Sokoban image path through verl's trainer on CPU: one flat training step with a tiny random
Qwen2.5-VL (``tiny_vl_model_dir``) on ``observation=image`` boards.

A random VL model cannot act (its advantages may well be zero); what is under test is that the pixels
reach the actor. A probe TaskRunner (shipped to Ray by value) wraps the trainer's ``_update_actor`` in the
Ray process that runs the trainer: just before the update it reads the batch's ``multi_modal_inputs``
from TransferQueue (exactly what the actor worker fetches) and records, as step metrics, how many trained
samples carry ``pixel_values`` and how many pixel rows / image tokens they hold. The actor's recomputed
log-probs matching the rollout server's (which ran the model on the images) is checked as well.
"""

from __future__ import annotations

import math
import sys

import pandas as pd
import pytest
import ray
from conftest import compose_config, read_metrics, wait_named_actors_gone

from himac_verl.agent.rows import task_rows
from himac_verl.trainer.task_runner import HimacTaskRunnerImpl

pytestmark = pytest.mark.ray

PROBE = "probe/"


def _install_probe() -> None:
    """Wrap ``HimacTrainer._update_actor`` (in this process) to record the batch's image inputs."""
    import transfer_queue as tq

    from himac_verl.trainer.trainer import HimacTrainer

    if getattr(HimacTrainer, "_probe_installed", False):
        return
    original = HimacTrainer._update_actor

    def _update_actor(self, batch, metrics):
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id,
                               select_fields=["multi_modal_inputs"])
        value = data["multi_modal_inputs"]
        rows = list(value.tolist() if hasattr(value, "tolist") else value)
        with_pixels = [r for r in rows if isinstance(r, dict) and r.get("pixel_values") is not None]
        metrics[PROBE + "samples"] = len(rows)
        metrics[PROBE + "samples_with_pixels"] = len(with_pixels)
        metrics[PROBE + "pixel_rows"] = sum(int(r["pixel_values"].shape[0]) for r in with_pixels)
        metrics[PROBE + "pixel_dim"] = int(with_pixels[0]["pixel_values"].shape[-1]) if with_pixels else 0
        metrics[PROBE + "grid_patches"] = sum(int(r["image_grid_thw"].prod(-1).sum()) for r in with_pixels
                                              if r.get("image_grid_thw") is not None)
        return original(self, batch, metrics)

    HimacTrainer._update_actor = _update_actor
    HimacTrainer._probe_installed = True


class _ProbeTaskRunner(HimacTaskRunnerImpl):
    def run(self, config):
        _install_probe()
        return super().run(config)


ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import tests/
ProbeTaskRunner = ray.remote(num_cpus=1)(_ProbeTaskRunner)


def test_image_observations_reach_the_actor(ray_session, tiny_vl_model_dir, tmp_path):
    from himac_verl.main import run

    pd.DataFrame(task_rows("sokoban", "train", ["6", "9"], "flat_agent")).to_parquet(tmp_path / "train.parquet")
    pd.DataFrame(task_rows("sokoban", "test", ["0"], "flat_agent", himac_phase="eval")).to_parquet(
        tmp_path / "val.parquet")
    metrics = tmp_path / "metrics.jsonl"
    config = compose_config([
        "mode=cpu",
        f"actor_rollout_ref.model.path={tiny_vl_model_dir}",
        f"data.train_files={tmp_path / 'train.parquet'}",
        f"data.val_files={tmp_path / 'val.parquet'}",
        "data.train_batch_size=1",
        "data.max_prompt_length=2048",
        "data.max_response_length=8",
        "actor_rollout_ref.rollout.n=1",
        "actor_rollout_ref.actor.ppo_mini_batch_size=1",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4",
        "algorithm.adv_estimator=episode_grpo",
        "himac.schedule.mode=flat",
        "himac.env=sokoban",
        "himac.group_size=2",
        "++himac.env_kwargs.observation=image",
        "++himac.agent.max_env_steps=2",
        "++himac.pool.num_workers=1",
        "trainer.total_training_steps=1",
        "trainer.logger=[console]",
        f"trainer.default_local_dir={tmp_path / 'ckpt'}",
        f"himac.metrics_file={metrics}",
    ])
    run(config, task_runner_class=ProbeTaskRunner)
    wait_named_actors_gone()
    facts, steps = read_metrics(metrics)
    assert facts["trainer_mode"] == "sync"
    assert [s["step"] for s in steps] == [1]
    step = steps[0]
    assert step["himac/failed_groups"] == 0
    trained = step["himac/samples/trained"]
    assert trained == step["himac/samples/flat"] >= 2  # 2 episodes of 1-2 turns
    # every trained sample carries its board's pixels: the 256x256 board, shrunk to 224x224 by the tiny
    # processor's max_pixels (28*28*64), is 16x16 = 256 patch rows of 3*2*14*14 values
    assert step[PROBE + "samples_with_pixels"] == step[PROBE + "samples"] >= trained
    assert step[PROBE + "pixel_dim"] == 3 * 2 * 14 * 14
    assert step[PROBE + "pixel_rows"] == step[PROBE + "grid_patches"] == 256 * step[PROBE + "samples"]
    assert math.isfinite(step["actor/pg_loss"])
    # the actor's recomputed log-probs equal the rollout server's, which ran the model on the images
    assert step["training/rollout_probs_diff_mean"] < 1e-4
