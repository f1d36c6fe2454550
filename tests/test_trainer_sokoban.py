"""HiMAC and both baselines run 2 real training steps on Sokoban through verl on CPU, with the main job's
starting model (``himac_verl.models.sokoban_agent``: it writes tagged plans and valid moves), so returns
differ and advantages are non-zero.

- HiMAC (``himac``, co-evolution, phase length 1): step 1 is phase A (macro: only planner samples train),
  step 2 phase B (micro: only the micro pass's executor samples train);
- baselines (``schedule.mode=flat``, ``flat_agent`` rows): ``episode_grpo`` and ``gigpo``.

Each run checks: non-zero advantages of the trained level, grad norm > 0, finite loss, verl's sync replay
buffer (run facts), zero failed groups, ``himac/optim_steps`` = ceil(trained turn samples / the update
budget's mini-batch: 6 planner samples in phase A, 16 turn samples otherwise). For the HiMAC run, the
rollout dump of each step (verl dumps the batch that went through the update) shows that the trained
samples are exactly the phase's samples: planner prompts only in the macro step, executor prompts only in
the micro step, as many as the loops produced.

Tasks are train levels of the model's own distribution (``min_moves=4``) whose shortest solution takes 5
or 6 moves and pushes in two directions, with an 8-step budget (``_tasks`` says why): the model wins some of its sampled episodes and loses others (one-push levels were too easy: a
whole group won alike and the flat step's grad norm was 0). A step's advantages are all zero only if every
one of its 4 tasks' groups agrees; the model samples at temperature 1 and its plans and moves vary (it was
fine-tuned with noise), so that is rare.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
from pathlib import Path

import pandas as pd
import pytest
import ray
from conftest import read_metrics, run_trainer

from himac_verl.agent.rows import task_rows
from himac_verl.envs import make_env
from himac_verl.envs.base import TaskSpec
from himac_verl.trainer.task_runner import HimacTaskRunnerImpl

pytestmark = pytest.mark.ray

GROUP, MAX_STEPS, TASKS_PER_STEP = 8, 8, 4
ENV_KWARGS = {"min_moves": 4}  # the starting model's levels (its spec's env_options)
MINI_BATCH_TURNS, MACRO_MINI_BATCH_TURNS = 16, 6


def _tasks(count: int) -> list[str]:
    """The first train levels of the model's distribution whose shortest solution takes 5 or 6 moves and
    pushes the box in two directions or more, with a budget of 8: blueprints then differ in what they say
    (the planner is unsure which pushes come first) and greedy executions under them end differently, wins
    take different numbers of steps, and the model wins some episodes and loses others. Measured with
    other choices: on one-push levels whole groups won alike (a flat step's grad norm was 0); on levels of
    up to 6 moves with a budget of 6 the micro groups all won in the optimal count; on 5-6-move levels
    with one push direction, every blueprint of a task scored alike (macro advantages all 0)."""
    from himac_verl.envs.sokoban.env import level_seed
    from himac_verl.envs.sokoban.generator import generate_level
    from himac_verl.envs.sokoban.subgoals import plan_subgoals

    env = make_env("sokoban", **ENV_KWARGS)
    chosen = []
    for i in range(1000):
        if not 5 <= env.reset(TaskSpec("sokoban", "train", str(i))).info["optimal_steps"] <= 6:
            continue
        level, plan = generate_level(level_seed("train", i), env.generator)
        if len({g.text() for g in plan_subgoals(level, plan)}) >= 2:
            chosen.append(str(i))
            if len(chosen) == count:
                break
    return chosen


RUNS = {
    "himac": ("himac_agent", ["algorithm.adv_estimator=himac", "himac.schedule.mode=coevolve",
                              "himac.schedule.phase_length=1", "himac.schedule.start_phase=macro"]),
    "episode_grpo": ("flat_agent", ["algorithm.adv_estimator=episode_grpo", "himac.schedule.mode=flat"]),
    "gigpo": ("flat_agent", ["algorithm.adv_estimator=gigpo", "himac.schedule.mode=flat"]),
}


def _overrides(tmp: Path, model_dir: str, metrics: Path, method: list[str]) -> list[str]:
    return [
        "mode=cpu",
        f"actor_rollout_ref.model.path={model_dir}",
        f"data.train_files={tmp / 'train.parquet'}",
        f"data.val_files={tmp / 'val.parquet'}",
        f"data.train_batch_size={TASKS_PER_STEP}",
        "data.shuffle=false",
        "data.max_prompt_length=1024",
        "data.max_response_length=32",
        "actor_rollout_ref.rollout.n=1",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={TASKS_PER_STEP}",
        # micro-batches of 1: the number of turn samples per step varies, and verl asserts that every
        # log-prob / update batch divides by its micro-batch size (the trainer pads only to optim steps)
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=1",
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=1",
        "himac.env=sokoban",
        f"himac.group_size={GROUP}",
        f"++himac.update_budget.mini_batch_turns={MINI_BATCH_TURNS}",
        f"++himac.update_budget.macro_mini_batch_turns={MACRO_MINI_BATCH_TURNS}",
        f"++himac.agent.max_env_steps={MAX_STEPS}",
        f"++himac.env_kwargs.min_moves={ENV_KWARGS['min_moves']}",
        "++himac.agent.subgoal_step_budget=2",
        "++himac.pool.num_workers=1",
        "trainer.total_training_steps=2",
        "trainer.logger=[console]",
        f"trainer.default_local_dir={tmp / 'ckpt'}",
        f"trainer.rollout_data_dir={tmp / 'rollouts'}",
        f"himac.metrics_file={metrics}",
        "actor_rollout_ref.actor.optim.lr=1e-4",
        *method,
    ]


def _dumped_prompts(folder: Path, step: int) -> list[str]:
    """Prompts of the dumped update batch, without verl's synthetic padding rows (uid ``pad...``, no
    output, zero loss mask: added so the rows split into the update's mini-batches)."""
    rows = [json.loads(line) for line in (folder / f"{step}.jsonl").read_text().splitlines()]
    return [r["input"] for r in rows if not r["uid"].startswith("pad")]


@pytest.mark.parametrize("name", list(RUNS))
def test_two_training_steps_on_sokoban(ray_session, sokoban_agent_dir, tmp_path, name):
    agent, method = RUNS[name]
    tasks = _tasks(2 * TASKS_PER_STEP)
    pd.DataFrame(task_rows("sokoban", "train", tasks, agent)).to_parquet(tmp_path / "train.parquet")
    pd.DataFrame(task_rows("sokoban", "test", ["0"], agent, himac_phase="eval")).to_parquet(
        tmp_path / "val.parquet")
    metrics = tmp_path / "metrics.jsonl"
    run_trainer(_overrides(tmp_path, sokoban_agent_dir, metrics, method))
    facts, steps = read_metrics(metrics)

    assert facts["trainer_mode"] == "sync"
    assert facts["replay_buffer"] == "verl.trainer.ppo.v1.replay_buffer.ReplayBuffer"
    assert facts["adv_estimator"] == name
    assert [s["step"] for s in steps] == [1, 2]
    for s in steps:
        assert s["himac/failed_groups"] == 0
        macro = name == "himac" and s["himac/phase"] == 0
        assert s["himac/mini_batch_turns"] == (MACRO_MINI_BATCH_TURNS if macro else MINI_BATCH_TURNS)
        assert s["himac/optim_steps"] == math.ceil(s["himac/samples/trained"] / s["himac/mini_batch_turns"]), s
        assert math.isfinite(s["actor/pg_loss"])
        assert math.isfinite(s["actor/grad_norm"]) and s["actor/grad_norm"] > 0
        # the model acts: most moves are valid (a random model's are all invalid)
        assert s["himac/invalid_action_rate"] < 0.5, s["himac/invalid_action_rate"]

    if name != "himac":
        for s in steps:
            assert s["himac/adv/flat/max"] > 0 > s["himac/adv/flat/min"]
            assert "himac/adv/macro/mean" not in s and "himac/adv/micro/mean" not in s
            assert s["himac/samples/trained"] == s["himac/samples/flat"]
        return

    macro, micro = steps
    assert (macro["himac/phase"], micro["himac/phase"]) == (0, 1)
    assert macro["himac/planner/parse_failure_rate"] < 0.8
    # phase A: non-zero macro advantages; only the planner samples trained
    assert macro["himac/adv/macro/max"] > 0 > macro["himac/adv/macro/min"]
    assert "himac/adv/micro/mean" not in macro
    assert macro["himac/samples/trained"] == macro["himac/samples/planner"] == TASKS_PER_STEP * GROUP
    assert macro["himac/samples/dropped_by_phase"] == macro["himac/samples/executor"]
    # phase B: non-zero micro advantages; only the micro pass's executor samples trained
    assert micro["himac/adv/micro/max"] > 0 > micro["himac/adv/micro/min"]
    assert "himac/adv/macro/mean" not in micro
    assert micro["himac/samples/dropped_by_phase"] == micro["himac/samples/planner"] + (
        micro["himac/samples/executor"] - micro["himac/samples/trained"])

    # verl dumps the batch that went through the update: in the macro step exactly the planner samples,
    # in the micro step executor samples only
    dump = tmp_path / "rollouts"
    macro_prompts, micro_prompts = _dumped_prompts(dump, 1), _dumped_prompts(dump, 2)
    assert len(macro_prompts) == macro["himac/samples/planner"]
    assert all("You are the planner" in p for p in macro_prompts)
    assert len(micro_prompts) == micro["himac/samples/trained"]
    assert all("You are the executor" in p for p in micro_prompts)


# --------------------------------------------------------------------------------------------------------
# A macro step on a full batch changes the weights exactly as a step on its planner samples alone (and a
# micro step exactly as a step on its micro-pass executor samples alone).
#
# Rollouts are not reproducible across runs (the hf_cpu engine samples concurrent episodes from one shared
# generator in continuous-batching order), so the two updates must see the SAME samples: verl's own
# rollout skip (``skip.rollout_tq``) dumps step 1's sampled TransferQueue batch in run A and injects it
# instead of a rollout in run B. verl's loader injects ``rollout.n`` trajectories per prompt (ours has
# many per call), so a probe TaskRunner (shipped to Ray by value) replaces it in the trainer's process
# with one that injects every dumped trajectory of each prompt, or only those of given role/pass pairs.
# Run A: full batch (planner + executor samples; the phase filter drops what the phase does not train).
# Run B: the same dump with only the phase's samples injected. Same initial weights, lr and data: the
# saved weights must be identical.
# --------------------------------------------------------------------------------------------------------


def _install_dump_loader(keep):
    """``keep``: None (inject every trajectory) or the ``role/pass`` pairs to inject."""
    import torch
    import transfer_queue as tq
    from verl.utils.skip.rollout_skip import RolloutTqSkip
    from verl.utils.tensordict_utils import index_select_tensor_dict

    def load_dump_data(self, step, new_prompt_uids, n, global_steps, partition_id="train"):
        payload = torch.load(self._get_v1_inner_dir(self._resolve_load_step_v1(step), 0) / self.tq_batch_name,
                             weights_only=False)
        data, keys, tags = payload["tensordict"], payload["keys"], payload["tags"]
        extra = data["extra_fields"]
        extra = list(extra.tolist() if hasattr(extra, "tolist") else extra)
        parents = list(dict.fromkeys(key.split("_")[0] for key in keys))
        if len(parents) != len(new_prompt_uids):
            raise RuntimeError(f"dump holds {len(parents)} prompts, the batch {len(new_prompt_uids)}")
        uid_of = dict(zip(parents, new_prompt_uids))
        count: dict[str, int] = {}
        new_keys, new_tags, index = [], [], []
        for i, (key, fields) in enumerate(zip(keys, extra)):
            if keep is not None and f"{fields['role']}/{fields['pass']}" not in keep:
                continue
            parent = key.split("_")[0]
            j = count.get(parent, 0)
            count[parent] = j + 1
            index.append(i)
            new_keys.append(f"{uid_of[parent]}_0_{j}")
            tag = dict(tags[i])
            tag.update(global_steps=global_steps, min_global_steps=global_steps, max_global_steps=global_steps)
            tag.pop("is_prompt", None)
            new_tags.append(tag)
        tq.kv_batch_put(keys=new_keys, fields=index_select_tensor_dict(data, index), tags=new_tags,
                        partition_id=partition_id)
        tq.kv_batch_put(keys=list(new_prompt_uids), partition_id=partition_id,
                        tags=[{"is_prompt": True, "status": "finished", "global_steps": global_steps}]
                        * len(new_prompt_uids))

    RolloutTqSkip.load_dump_data = load_dump_data


class _DumpLoaderTaskRunner(HimacTaskRunnerImpl):
    def run(self, config):
        from omegaconf import OmegaConf

        keep = OmegaConf.select(config, "test_probe.keep", default=None)
        _install_dump_loader(None if keep is None else set(keep))
        return super().run(config)


ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import tests/
DumpLoaderTaskRunner = ray.remote(num_cpus=1)(_DumpLoaderTaskRunner)


def _hf_state(folder: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(f)))
    assert out, f"no safetensors under {folder}"
    return out


# phase -> the role/pass pairs of the samples that phase trains
PHASE_SAMPLES = {"macro": ["planner/macro"], "micro": ["executor/micro"]}


@pytest.mark.parametrize("phase", list(PHASE_SAMPLES))
def test_phase_step_equals_step_on_its_samples_alone(ray_session, sokoban_agent_dir, tmp_path, phase):
    from conftest import compose_config, wait_named_actors_gone

    from himac_verl.main import run

    tasks = _tasks(TASKS_PER_STEP)
    pd.DataFrame(task_rows("sokoban", "train", tasks, "himac_agent")).to_parquet(tmp_path / "train.parquet")
    pd.DataFrame(task_rows("sokoban", "test", ["0"], "himac_agent", himac_phase="eval")).to_parquet(
        tmp_path / "val.parquet")
    dump = tmp_path / "dump"

    def one_step(tag: str, keep):
        metrics = tmp_path / f"{tag}.jsonl"
        overrides = _overrides(tmp_path, sokoban_agent_dir, metrics, RUNS["himac"][1])
        overrides = [o for o in overrides if not o.startswith(("trainer.total_training_steps",
                                                               "trainer.default_local_dir",
                                                               "himac.schedule.start_phase",
                                                               "actor_rollout_ref.actor.optim.lr"))]
        overrides += [
            "trainer.total_training_steps=1", f"trainer.default_local_dir={tmp_path / tag}",
            "trainer.save_freq=1", "actor_rollout_ref.actor.optim.lr=1e-2",
            "actor_rollout_ref.actor.optim.weight_decay=0.0",
            "actor_rollout_ref.actor.checkpoint.save_contents=[model,optimizer,extra,hf_model]",
            "skip.rollout_tq.enable=true", f"skip.rollout_tq.dump_dir={dump}", "skip.rollout_tq.steps=[1]",
            f"himac.schedule.start_phase={phase}",
            f"++test_probe.keep={'[' + ','.join(keep) + ']' if keep else 'null'}",
        ]
        run(compose_config(overrides), task_runner_class=DumpLoaderTaskRunner)
        wait_named_actors_gone()
        _, steps = read_metrics(metrics)
        return steps[0], _hf_state(tmp_path / tag / "global_step_1" / "actor" / "huggingface")

    full, w_full = one_step("full", None)  # rolls out and dumps the full batch
    alone, w_alone = one_step("alone", PHASE_SAMPLES[phase])  # injects only the phase's samples
    assert full["himac/samples/dropped_by_phase"] > 0 and alone["himac/samples/dropped_by_phase"] == 0
    assert alone["himac/samples/trained"] == full["himac/samples/trained"]
    if phase == "macro":
        assert full["himac/samples/dropped_by_phase"] == full["himac/samples/executor"]
        assert "himac/samples/executor" not in alone
        assert alone["himac/samples/planner"] == full["himac/samples/planner"] == TASKS_PER_STEP * GROUP
    else:
        assert full["himac/samples/dropped_by_phase"] == full["himac/samples/planner"] + (
            full["himac/samples/executor"] - full["himac/samples/trained"])
        assert "himac/samples/planner" not in alone
    level = "himac/adv/" + phase
    assert alone[level + "/max"] == full[level + "/max"] > 0

    initial = _hf_state(Path(sokoban_agent_dir))
    moved = max(float((w_full[k] - initial[k]).abs().max()) for k in initial if k in w_full)
    assert moved > 1e-3, moved  # the step did change the weights
    assert w_full.keys() == w_alone.keys()
    diffs = {k: float((w_full[k] - w_alone[k]).abs().max()) for k in w_full}
    assert max(diffs.values()) == 0.0, sorted(diffs.items(), key=lambda kv: -kv[1])[:3]
