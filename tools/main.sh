#!/usr/bin/env bash
# The README's main job: installs what is missing (idempotent), then trains HiMAC (iterative co-evolution:
# phase A planner steps, phase B executor steps, alternating) on Sokoban 6x6 through verl's own trainer in
# CPU mode, starting from the project's small Sokoban model (himac_verl/models/sokoban_agent.py; built
# offline into the cache on first use, about 9 minutes). It validates greedily on 128 held-out levels before
# and after training (64 in between) and prints held-out success before -> after with Wilson intervals and
# McNemar's exact test on the same levels. Settings: himac_verl/config/preset/sokoban_learning.yaml.
# Extra arguments are hydra overrides (e.g. trainer.total_training_steps=6).
#   HIMAC_MAIN=smollm2 bash tools/main.sh   # the older smoke run instead: SmolLM2-135M, 2 steps (learns nothing)
# Output: one progress line per step, verl's console metrics, then the learning report and a summary; files
# under outputs/main/ (metrics.jsonl, eval_episodes.jsonl, learning.json/png, summary.json, curves.png,
# TensorBoard logs, the last step's checkpoint with an HF folder for `python -m himac_verl.eval run`).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash tools/install.sh
export PYTHONUNBUFFERED=1
out="${HIMAC_MAIN_OUT:-$root/outputs/main}"
common=(
    "trainer.default_local_dir=$out/checkpoints"
    "himac.tensorboard_dir=$out/tensorboard"
    "himac.metrics_file=$out/metrics.jsonl"
    trainer.resume_mode=disable
)
if [[ "${HIMAC_MAIN:-sokoban_agent}" == smollm2 ]]; then
    HIMAC_PRESET=cpu exec bash recipes/himac_sokoban.sh trainer.experiment_name=main_himac_sokoban_smollm2 \
        trainer.save_freq=1000 "${common[@]}" "$@"
fi
exec "${HIMAC_VENV:-$root/.venv}/bin/python" -m himac_verl.main mode=cpu +preset=sokoban_learning \
    "himac.eval_log_file=$out/eval_episodes.jsonl" "${common[@]}" "$@"
