"""The HiMAC trainer through verl on CPU: co-evolution phases, role-aware advantages, optimizer-step count,
planner learning on the blueprint bandit, and resume continuing the schedule.

The blueprint bandit (``himac_verl.envs.bandit``) wins exactly when the executed blueprint is the winning
one; with the ``choice`` blueprint format the planner's first token picks one of two fixed blueprints
(even token id: the winner), which a tiny random model can do from step 1. One run of 4 steps with
phase length 3 (steps 1-3 phase A, step 4 phase B), then a resumed run for step 5.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import read_metrics, run_trainer

from himac_verl.agent.prompts import load_template, render
from himac_verl.agent.rows import task_rows
from himac_verl.envs import make_env
from himac_verl.envs.base import TaskSpec

pytestmark = pytest.mark.ray

CHOICES = [["press the red button"], ["press the blue button"]]  # index 0 (even first token) wins
HELD_OUT = [str(i) for i in range(100, 106)]


def _overrides(tmp: Path, model_dir: str, metrics: Path, steps: int) -> list[str]:
    return [
        "mode=cpu",
        f"actor_rollout_ref.model.path={model_dir}",
        f"data.train_files={tmp / 'train.parquet'}",
        f"data.val_files={tmp / 'val.parquet'}",
        "data.train_batch_size=2",
        "data.max_prompt_length=256",
        "data.max_response_length=4",
        "actor_rollout_ref.rollout.n=1",
        "actor_rollout_ref.actor.ppo_mini_batch_size=2",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
        "algorithm.adv_estimator=himac",
        "himac.env=bandit",
        "himac.group_size=8",
        "himac.schedule.phase_length=3",
        "himac.schedule.start_phase=macro",
        "++himac.update_budget.mini_batch_turns=8",  # 16 executor turn samples in phase B -> 2 optimizer steps
        "++himac.update_budget.macro_mini_batch_turns=4",  # 16 planner samples in phase A -> 4 optimizer steps
        "++himac.update_budget.reset_optimizer_on_phase_switch=true",
        "himac.advantage.norm_by_std=true",
        "++himac.env_kwargs.winning_plan=[press the red button]",
        "++himac.agent.blueprint_format=choice",
        "++himac.agent.blueprint_choices=[[press the red button],[press the blue button]]",
        "++himac.pool.num_workers=1",
        f"trainer.total_training_steps={steps}",
        "trainer.save_freq=1",
        "trainer.resume_mode=auto",
        f"trainer.default_local_dir={tmp / 'ckpt'}",
        "trainer.logger=[console]",
        f"himac.metrics_file={metrics}",
        "actor_rollout_ref.actor.optim.lr=0.02",
        "actor_rollout_ref.actor.optim.weight_decay=0.0",
        "actor_rollout_ref.actor.checkpoint.save_contents=[model,optimizer,extra,hf_model]",
    ]


def _winner_probability(model_dir: str, state: dict | None) -> float:
    """Mean probability, over held-out bandit prompts, that the planner's first token picks the winner."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if state is not None:
        model.load_state_dict(state, strict=False)
    env = make_env("bandit")
    template = load_template("bandit", "planner", "v1")
    even = torch.arange(model.config.vocab_size) % 2 == 0
    probs = []
    for task_id in HELD_OUT:
        reset = env.reset(TaskSpec("bandit", "test", task_id))
        text = render(template, instruction=reset.instruction, observation=reset.observation.text, admissible="",
                      max_subgoals=6, max_steps=1, legend="", step=1)
        chat = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                       tokenize=False)
        ids = torch.tensor([tok(chat, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            p = torch.softmax(model(ids).logits[0, -1], -1)
        probs.append(float(p[even].sum()))
    return sum(probs) / len(probs)


def _hf_state(folder: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for f in sorted((folder / "actor" / "huggingface").glob("*.safetensors")):
        out.update(load_file(str(f)))
    assert out, f"no hf weights under {folder}"
    return out


@pytest.fixture(scope="module")
def sharp_model_dir(tmp_path_factory) -> str:
    """A tiny random Qwen2 whose first-token distribution sits on a few mixed-parity tokens (init std 0.2)."""
    from himac_verl.models.tiny import build_tiny_qwen2

    return build_tiny_qwen2(tmp_path_factory.mktemp("tiny_sharp"), init_std=0.2)


def test_coevolution_bandit_learning_and_resume(ray_session, sharp_model_dir, tmp_path):
    tiny_model_dir = sharp_model_dir
    pd.DataFrame(task_rows("bandit", "train", [str(i) for i in range(16)], "himac_agent")).to_parquet(
        tmp_path / "train.parquet")
    pd.DataFrame(task_rows("bandit", "test", HELD_OUT[:2], "himac_agent", himac_phase="eval")).to_parquet(
        tmp_path / "val.parquet")
    metrics = tmp_path / "a.jsonl"
    run_trainer(_overrides(tmp_path, tiny_model_dir, metrics, steps=4))
    facts, steps = read_metrics(metrics)
    assert facts["trainer_mode"] == "sync" and facts["adv_estimator"] == "himac"
    assert [s["step"] for s in steps] == [1, 2, 3, 4]
    assert [s["himac/phase"] for s in steps] == [0, 0, 0, 1]  # macro x3, then micro

    # ceil(16 trainable planner samples / 4) in phase A, ceil(16 executor turn samples / 8) in phase B
    assert [s["himac/optim_steps"] for s in steps] == [4, 4, 4, 2]
    for s in steps:
        assert s["himac/failed_groups"] == 0
        assert math.isfinite(s["actor/pg_loss"])
        assert s["himac/samples/dropped_by_phase"] > 0
    for s in steps[:3]:  # phase A: only planner samples train
        assert s["himac/samples/trained"] == s["himac/samples/planner"] == 16  # 2 tasks x 8 blueprints
        assert "himac/adv/micro/mean" not in s
        if s["himac/adv/macro/max"] == s["himac/adv/macro/min"]:
            # every group's blueprints all won (or all lost): no relative signal, exactly zero credit
            # (4 optimizer steps per phase-A step at lr 0.02 can converge the planner by step 2)
            assert s["himac/adv/macro/max"] == 0.0
        else:
            assert s["himac/adv/macro/max"] > 0 > s["himac/adv/macro/min"]
            assert s["actor/grad_norm"] > 0
    # the random start picks the winner about half the time: the first step's groups are mixed
    assert steps[0]["himac/adv/macro/max"] > 0 > steps[0]["himac/adv/macro/min"]
    assert 0.0 < steps[0]["himac/success/macro"] < 1.0
    # phase B: only the micro pass's executor samples train; the bandit's outcome depends on the
    # blueprint alone, so all executions under z* have equal returns and zero micro advantage
    micro = steps[3]
    # the phase switch (A -> B) reset Adam's state on the worker; no other step did
    assert micro["himac/optimizer_reset"] == 1 and micro["himac/optimizer_state_tensors_zeroed"] > 0
    assert all("himac/optimizer_reset" not in s for s in steps[:3])
    assert "himac/adv/macro/mean" not in micro
    assert micro["himac/adv/micro/max"] == micro["himac/adv/micro/min"] == 0.0
    assert micro["himac/samples/trained"] == 16  # 2 tasks x 8 micro episodes x 1 executor turn
    assert micro["himac/success/micro"] == 1.0  # z* is the winner whenever a macro group found it

    # phase A raised the planner's probability of choosing the winning blueprint on held-out prompts
    before = _winner_probability(tiny_model_dir, None)
    after = _winner_probability(tiny_model_dir, _hf_state(tmp_path / "ckpt" / "global_step_3"))
    assert after > before + 0.1, (before, after)
    assert steps[2]["himac/success/macro"] >= steps[0]["himac/success/macro"]

    # resume: step 5 continues the schedule (phase B) from step 4's checkpoint
    metrics_b = tmp_path / "b.jsonl"
    run_trainer(_overrides(tmp_path, tiny_model_dir, metrics_b, steps=5))
    facts_b, steps_b = read_metrics(metrics_b)
    assert facts_b["resumed_from_step"] == 4
    assert [(s["step"], s["himac/phase"]) for s in steps_b] == [(5, 1)]
    saved = (tmp_path / "ckpt" / "global_step_5" / "himac_schedule.json").read_text()
    assert '"phase_length": 3' in saved and '"phase": "micro"' in saved
