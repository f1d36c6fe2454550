"""Every recipe (GPU and CPU preset) composes on our hydra config and passes our validation and verl's;
the budget is the same across methods; command-line overrides come last and win; a missing MODEL_PATH
fails with a clear message; the dry-run switch validates and prints without starting Ray.

The override lists are read from the scripts themselves (``HIMAC_PRINT_OVERRIDES=1``), so what is tested
is what ``bash recipes/<name>.sh`` would launch.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from himac_verl.agent.config import LoopSettings
from himac_verl.trainer.validate import HimacConfigError, compose, validate_himac_config, verl_validate

REPO = Path(__file__).resolve().parent.parent
METHODS = ("himac", "grpo", "gigpo")
ENVS = ("alfworld", "webshop", "sokoban")
RECIPES = [f"{m}_{e}" for m in METHODS for e in ENVS]
ESTIMATOR = {"himac": "himac", "grpo": "episode_grpo", "gigpo": "gigpo"}
# env -> (prompt, response, max env steps); GiGPO/HiMAC published, Sokoban lengths our choice
ENV_BUDGET = {"alfworld": (2048, 512, 50), "webshop": (4096, 512, 15), "sokoban": (2048, 512, 15)}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    """Stand-in model folders: the validation reads config.json (text-only vs vision-language)."""
    root = tmp_path_factory.mktemp("models")
    out = {}
    for name, config in (("text", {"model_type": "qwen2"}), ("vl", {"model_type": "qwen2_5_vl", "vision_config": {}})):
        (root / name).mkdir()
        (root / name / "config.json").write_text(json.dumps(config))
        out[name] = str(root / name)
    return out


def run_recipe(name: str, *args: str, preset: str = "gpu", model: str | None = None,
               **env: str) -> subprocess.CompletedProcess:
    environ = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "HIMAC_PRESET": preset, **env}
    for key in ("HIMAC_CACHE_DIR", "HIMAC_DATA_DIR"):
        if key in os.environ:
            environ[key] = os.environ[key]
    if model is not None:
        environ["MODEL_PATH"] = model
    return subprocess.run(["bash", str(REPO / "recipes" / f"{name}.sh"), *args], env=environ, capture_output=True,
                          text=True, timeout=600)


def overrides(name: str, *args: str, preset: str = "gpu", model: str | None = None) -> list[str]:
    result = run_recipe(name, *args, preset=preset, model=model, HIMAC_PRINT_OVERRIDES="1")
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if line]


def recipe_config(name: str, models: dict[str, str], *args: str, preset: str = "gpu"):
    model = models["vl" if name.endswith("sokoban") else "text"] if preset == "gpu" else None
    return compose(overrides(name, *args, preset=preset, model=model))


@pytest.mark.parametrize("preset", ["gpu", "cpu"])
@pytest.mark.parametrize("name", RECIPES)
def test_recipe_composes_and_validates(name, preset, models):
    method, env = name.split("_")
    config = recipe_config(name, models, preset=preset)
    validate_himac_config(config)
    verl_validate(config)

    assert config.himac.env == env
    assert config.algorithm.adv_estimator == ESTIMATOR[method]
    assert config.himac.schedule.mode == ("coevolve" if method == "himac" else "flat")
    assert config.actor_rollout_ref.rollout.n == 1
    assert config.data.train_files == "auto" and config.data.val_files == "auto"
    assert config.actor_rollout_ref.actor.optim.lr == 1e-6
    assert config.actor_rollout_ref.actor.use_kl_loss is (preset == "gpu")  # CPU: no FSDP2 reference model
    assert (config.actor_rollout_ref.actor.kl_loss_coef, config.actor_rollout_ref.actor.kl_loss_type) == \
        (0.01, "low_var_kl")
    # verl-agent's mini-batches in turn samples: 256 ALFWorld, 64 WebShop and Sokoban
    assert config.himac.update_budget.mini_batch_turns == {"alfworld": 256, "webshop": 64, "sokoban": 64}[env]
    if preset == "gpu":
        prompt, response, steps = ENV_BUDGET[env]
        assert (config.data.max_prompt_length, config.data.max_response_length) == (prompt, response)
        assert config.himac.agent.max_env_steps == steps
        assert (config.himac.group_size, config.data.train_batch_size) == (8, 16)
        assert config.trainer.total_training_steps == 150
        assert config.actor_rollout_ref.rollout.name == "vllm" and config.himac.cpu_mode is False
        assert config.actor_rollout_ref.model.path == models["vl" if env == "sokoban" else "text"]
        assert config.trainer.experiment_name == name
    else:
        assert config.himac.cpu_mode is True and config.actor_rollout_ref.rollout.name == "hf_cpu"
        assert config.trainer.device == "cpu"
        assert config.actor_rollout_ref.model.path == "auto" and config.himac.model == "smollm2"
        assert config.trainer.total_training_steps == 2 and config.data.train_batch_size == 2
        assert config.himac.group_size == 2 and config.himac.data.val_size == 2
        assert config.trainer.experiment_name == f"cpu_{name}"
    if env == "sokoban":
        assert config.himac.env_kwargs.observation == ("image" if preset == "gpu" else "text")
    if method == "himac":
        # GPU: the trainer's default phase length (15: 150 steps end on phase B); CPU preset: 1
        assert config.himac.schedule.get("phase_length") == (None if preset == "gpu" else 1)
        assert config.himac.update_budget.macro_mini_batch_turns == 32
        assert config.himac.agent.use_sub_done is True and config.himac.agent.blueprint_selection == "best"
        settings = LoopSettings.from_config(config, env)
        if preset == "gpu":
            assert settings.blueprint_format == "tagged"
        else:  # SmolLM2 cannot write tagged blueprints: fixed plans picked by the first token
            assert settings.blueprint_format == "choice" and len(settings.blueprint_choices) == 2
            assert all(isinstance(g, str) and " " in g for plan in settings.blueprint_choices for g in plan)
    if method == "gigpo":
        assert (config.himac.advantage.gamma, config.himac.advantage.step_weight) == (0.95, 1.0)


BUDGET_KEYS = ["data.train_batch_size", "himac.group_size", "data.max_prompt_length", "data.max_response_length",
               "himac.agent.max_env_steps", "trainer.total_training_steps", "actor_rollout_ref.actor.optim.lr",
               "actor_rollout_ref.actor.kl_loss_coef", "actor_rollout_ref.actor.ppo_mini_batch_size",
               "trainer.n_gpus_per_node", "trainer.test_freq", "actor_rollout_ref.model.path",
               "himac.env_kwargs", "himac.update_budget.mini_batch_turns"]


@pytest.mark.parametrize("env", ENVS)
def test_same_budget_across_methods(env, models):
    from omegaconf import OmegaConf

    configs = {m: recipe_config(f"{m}_{env}", models) for m in METHODS}
    budgets = {m: [OmegaConf.select(config, k) for k in BUDGET_KEYS] for m, config in configs.items()}
    assert budgets["himac"] == budgets["grpo"] == budgets["gigpo"], budgets


def test_command_line_overrides_come_last_and_win(models):
    config = recipe_config("himac_alfworld", models, "trainer.total_training_steps=10", "himac.schedule.mode=joint",
                           "himac.agent.use_sub_done=false", "himac.agent.blueprint_selection=random")
    validate_himac_config(config)
    assert config.trainer.total_training_steps == 10 and config.himac.schedule.mode == "joint"
    assert config.himac.agent.use_sub_done is False and config.himac.agent.blueprint_selection == "random"
    bad = recipe_config("gigpo_webshop", models, "actor_rollout_ref.rollout.n=8")
    with pytest.raises(HimacConfigError, match=r"actor_rollout_ref.rollout.n=8: must be 1"):
        validate_himac_config(bad)
    cpu_with_vllm = recipe_config("grpo_sokoban", models, "actor_rollout_ref.rollout.name=vllm", preset="cpu")
    with pytest.raises(HimacConfigError, match=r"rollout.name='vllm': himac.cpu_mode=true needs 'hf_cpu'"):
        validate_himac_config(cpu_with_vllm)


def test_model_path_is_required_on_gpu(tmp_path):
    unset = run_recipe("himac_alfworld")
    assert unset.returncode == 1 and "MODEL_PATH is not set" in unset.stderr
    assert "Qwen2.5-1.5B-Instruct" in unset.stderr
    assert "Qwen2.5-VL" in run_recipe("grpo_sokoban").stderr
    missing = run_recipe("gigpo_webshop", model=str(tmp_path / "nope"))
    assert missing.returncode == 1 and f"MODEL_PATH={tmp_path / 'nope'} is not a folder" in missing.stderr
    bad_preset = run_recipe("himac_sokoban", preset="tpu")
    assert bad_preset.returncode == 1 and "HIMAC_PRESET=tpu" in bad_preset.stderr


def test_dry_run_validates_and_prints_without_ray(models):
    ok = run_recipe("himac_sokoban", "trainer.total_training_steps=7", model=models["vl"], HIMAC_DRY_RUN="1")
    assert ok.returncode == 0, ok.stderr
    assert "DRY RUN OK" in ok.stderr and "Ray was not started" in ok.stderr
    assert "adv_estimator: himac" in ok.stdout and "total_training_steps: 7" in ok.stdout
    assert "data.train_files=auto: sokoban/train, 8192 tasks, agent_name=himac_agent" in ok.stderr
    bad = run_recipe("himac_sokoban", model=models["text"], HIMAC_DRY_RUN="1")  # text model, image observations
    assert bad.returncode == 2 and "DRY RUN FAILED" in bad.stderr
    assert "himac.env_kwargs.observation='image': Sokoban images need a vision-language model" in bad.stderr
