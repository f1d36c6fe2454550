"""The README's main-job command (`bash tools/main.sh`) with a tiny-model override: 2 steps (phase A,
then phase B) through verl in CPU mode, with the progress lines, the summary, the curves PNG, TensorBoard
logs and the last step's checkpoint. It runs as a subprocess, exactly as a user types it (its own Ray)."""

import json
import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray
REPO = Path(__file__).resolve().parent.parent


def test_main_job_command_with_a_tiny_model(tmp_path):
    env = {**os.environ, "HIMAC_MAIN_OUT": str(tmp_path / "main"), "PYTHONUNBUFFERED": "1"}
    env.pop("HIMAC_CPU_MODE", None)  # the pytest process may be in CPU mode already; the job sets its own
    proc = subprocess.run(
        ["bash", "tools/main.sh", "himac.model=tiny", "data.max_response_length=16",
         "himac.agent.max_env_steps=2", "himac.pool.num_workers=1", "himac.data.val_size=4",
         "himac.val_levels_between=2", "himac.schedule.phase_length=1", "trainer.total_training_steps=2",
         "trainer.test_freq=2", "data.train_batch_size=2", "himac.group_size=2",
         "actor_rollout_ref.actor.ppo_mini_batch_size=2"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1500,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    lines = [line for line in out.splitlines() if "[himac] step" in line]
    assert len(lines) == 2 and "phase=macro" in lines[0] and "phase=micro" in lines[1], lines
    assert "[himac] run summary: steps 1-2, phases macro,micro" in out
    main = tmp_path / "main"
    summary = json.loads((main / "summary.json").read_text())
    assert summary["failed_groups"] == 0 and summary["phases_run"] == ["macro", "micro"]
    assert (main / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert any((main / "tensorboard").rglob("events.out.tfevents.*"))
    assert (main / "checkpoints" / "latest_checkpointed_iteration.txt").read_text().strip() == "2"
    assert list((main / "checkpoints" / "global_step_2" / "actor" / "huggingface").glob("*.safetensors"))
    # held-out validations before (step 0) and after (step 2) on the same 4 levels, and their report
    learning = json.loads((main / "learning.json").read_text())
    assert (learning["paired"]["step_before"], learning["paired"]["step_after"], learning["paired"]["n"]) == (0, 2, 4)
    assert "held-out success" in out and (main / "learning.png").read_bytes()[:4] == b"\x89PNG"
