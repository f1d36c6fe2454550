# shellcheck shell=bash
# Shared by every recipe: builds the hydra override list of (method, env, preset) and launches
# `python -m himac_verl.main` with it. A recipe is two lines:
#
#     source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
#     himac_recipe <himac|grpo|gigpo> <alfworld|webshop|sokoban> "$@"
#
# Environment:
#   MODEL_PATH             local HF model folder (required by the GPU preset; nothing is downloaded)
#   HIMAC_PRESET=gpu|cpu   gpu (default): the published budget on GPUs; cpu: CPU mode, SmolLM2-135M,
#                          tiny batch/group/steps (a smoke run of the same pipeline on a laptop)
#   HIMAC_DRY_RUN=1        compose + validate (ours and verl's) + print the config; Ray is not started
#   HIMAC_PRINT_OVERRIDES=1  print the override list, one per line, and exit (used by the tests)
#   PYTHON                 interpreter (default: the checkout's .venv/bin/python, else python3)
# Every setting is a hydra override and the command line comes last, so any of them can be changed:
#     bash recipes/himac_alfworld.sh trainer.total_training_steps=10 himac.schedule.phase_length=5
# Keys under himac.* are written with `++` (add or replace), so they work whether or not the trainer's
# yaml already declares them. A himac.agent.* key that no recipe sets needs `++` on the command line too.
#
# Sources of the defaults (docs/recipes.md has the table): GiGPO's verl-agent scripts and both papers
# (group 8, 16 tasks per batch, lr 1e-6, KL 0.01 low_var_kl as a loss, prompt/response 2048/512 ALFWorld
# and 4096/512 WebShop, max env steps 50/15/15, 150 iterations, GiGPO gamma 0.95 and step weight 1).
# Update budget as verl-agent's scripts: mini-batches of 256 (ALFWorld) / 64 (WebShop, Sokoban) turn samples,
# so an iteration takes about 10-25 / up to ~30 / up to ~60 Adam steps; phase A (128 planner rows) uses
# mini-batches of 32 planner rows (4 steps). NOT published by HiMAC, chosen here: phase length 15 steps
# (the trainer's default: 150 steps = 10 phases, ending on phase B), subgoal step budget 10/5/4
# (ALFWorld/WebShop/Sokoban), the update size of phase A, Sokoban prompt/response 2048/512.

_HIMAC_RECIPES_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
_HIMAC_REPO="$(cd "${_HIMAC_RECIPES_DIR}/.." && pwd)"

_himac_die() {
    echo "recipe error: $*" >&2
    exit 1
}

# Method-independent, hardware-independent settings of one env.
_himac_env_overrides() {
    local env="$1"
    case "$env" in
        alfworld)
            HIMAC_OVERRIDES+=(
                data.max_prompt_length=2048
                data.max_response_length=512
                ++himac.agent.max_env_steps=50
                ++himac.agent.subgoal_step_budget=10    # unpublished: our choice
                ++himac.update_budget.mini_batch_turns=256     # verl-agent: ppo_mini_batch_size=256
            ) ;;
        webshop)
            HIMAC_OVERRIDES+=(
                data.max_prompt_length=4096
                data.max_response_length=512
                ++himac.agent.max_env_steps=15
                ++himac.agent.subgoal_step_budget=5     # unpublished: our choice
                ++himac.update_budget.mini_batch_turns=64      # verl-agent: ppo_mini_batch_size=64
            ) ;;
        sokoban)
            HIMAC_OVERRIDES+=(
                data.max_prompt_length=2048             # our choice (blueprint + history + board)
                data.max_response_length=512
                ++himac.agent.max_env_steps=15
                ++himac.agent.subgoal_step_budget=4     # unpublished: our choice
                ++himac.update_budget.mini_batch_turns=64      # verl-agent: ppo_mini_batch_size=64
                ++himac.env_kwargs.observation=image    # GiGPO/HiMAC train Sokoban from images (Qwen2.5-VL)
            ) ;;
        *) _himac_die "unknown env '$env' (alfworld, webshop, sokoban)" ;;
    esac
}

# Method settings (estimator, schedule, agent switches).
_himac_method_overrides() {
    local method="$1" env="$2"
    case "$method" in
        himac)
            HIMAC_OVERRIDES+=(
                algorithm.adv_estimator=himac
                ++himac.schedule.mode=coevolve
                ++himac.schedule.start_phase=macro      # phase length: the trainer's default (15, ends on B)
                ++himac.update_budget.macro_mini_batch_turns=32  # phase A: 128 planner rows -> 4 Adam steps
                ++himac.advantage.norm_by_std=true
                ++himac.agent.use_sub_done=true         # ablation: false (fixed-step subgoal switching)
                ++himac.agent.blueprint_selection=best  # ablation: random
            ) ;;
        grpo)
            HIMAC_OVERRIDES+=(
                algorithm.adv_estimator=episode_grpo
                ++himac.schedule.mode=flat
                ++himac.advantage.norm_by_std=true
            ) ;;
        gigpo)
            # verl-agent's GiGPO scripts: mean_std_norm on ALFWorld, mean_norm on WebShop and Sokoban
            local norm=false
            if [[ "$env" == alfworld ]]; then norm=true; fi
            HIMAC_OVERRIDES+=(
                algorithm.adv_estimator=gigpo
                ++himac.schedule.mode=flat
                ++himac.advantage.gamma=0.95
                ++himac.advantage.step_weight=1.0
                ++himac.advantage.norm_by_std=$norm
            ) ;;
        *) _himac_die "unknown method '$method' (himac, grpo, gigpo)" ;;
    esac
}

# The published budget, the same for every method.
_himac_budget_overrides() {
    local method="$1" env="$2"
    HIMAC_OVERRIDES+=(
        ++himac.env="$env"
        ++himac.group_size=8
        actor_rollout_ref.rollout.n=1                   # our loops make the whole group in one call
        data.train_files=auto                           # built by himac_verl.tasks.env_datasets
        data.val_files=auto
        data.train_batch_size=16
        data.filter_overlong_prompts=false              # rows only name a task; the loop builds prompts
        actor_rollout_ref.actor.ppo_mini_batch_size=16
        actor_rollout_ref.actor.optim.lr=1e-6
        actor_rollout_ref.actor.use_kl_loss=true
        actor_rollout_ref.actor.kl_loss_coef=0.01
        actor_rollout_ref.actor.kl_loss_type=low_var_kl
        algorithm.use_kl_in_reward=false
        trainer.total_training_steps=150
        trainer.total_epochs=150
        trainer.experiment_name="${method}_${env}"
    )
}

_himac_gpu_overrides() {
    local method="$1" env="$2"
    if [[ -z "${MODEL_PATH:-}" ]]; then
        local hint="Qwen2.5-1.5B-Instruct (or -7B-Instruct)"
        if [[ "$env" == sokoban ]]; then hint="Qwen2.5-VL-3B-Instruct or Qwen2.5-VL-7B-Instruct"; fi
        _himac_die "MODEL_PATH is not set. Point it at a local folder holding ${hint}; himac_verl never downloads at run time (or use HIMAC_PRESET=cpu)."
    fi
    [[ -d "$MODEL_PATH" ]] || _himac_die "MODEL_PATH=$MODEL_PATH is not a folder (expected a local HF model folder)."
    HIMAC_OVERRIDES+=(
        mode=gpu
        actor_rollout_ref.model.path="$MODEL_PATH"
        actor_rollout_ref.rollout.name=vllm
        actor_rollout_ref.rollout.tensor_model_parallel_size=2
        actor_rollout_ref.rollout.gpu_memory_utilization=0.6
        actor_rollout_ref.model.use_remove_padding=true
        actor_rollout_ref.model.enable_gradient_checkpointing=true
        actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8
        actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=16
        actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=16
        actor_rollout_ref.ref.fsdp_config.param_offload=true
        trainer.n_gpus_per_node=4
        trainer.nnodes=1
        trainer.val_before_train=true
        trainer.test_freq=5
        trainer.save_freq=50
        "trainer.logger=[console,tensorboard]"
    )
}

_himac_cpu_overrides() {
    local method="$1" env="$2"
    HIMAC_OVERRIDES+=(mode=cpu)
    if [[ -n "${MODEL_PATH:-}" ]]; then
        [[ -d "$MODEL_PATH" ]] || _himac_die "MODEL_PATH=$MODEL_PATH is not a folder (expected a local HF model folder)."
        HIMAC_OVERRIDES+=(actor_rollout_ref.model.path="$MODEL_PATH")
    else
        HIMAC_OVERRIDES+=(actor_rollout_ref.model.path=auto himac.model=smollm2)
    fi
    local steps budget
    case "$env" in
        alfworld) steps=8; budget=4 ;;
        webshop) steps=5; budget=3 ;;
        sokoban) steps=6; budget=3
                 HIMAC_OVERRIDES+=(++himac.env_kwargs.observation=text) ;;  # SmolLM2 reads no images
    esac
    if [[ "$method" == himac ]]; then
        # Both phases within the 2 steps. SmolLM2-135M never writes a parsable tagged blueprint (parse
        # failure rate 1.0 measured), which leaves phase B without executor episodes; the choice format
        # (the first response token picks one of these fixed plans) always yields a blueprint to execute.
        local choices
        case "$env" in
            alfworld) choices='[["Find the object the task names","Bring it where the task says and finish"],["Finish the task"]]' ;;
            webshop) choices='[["Search for the product","Open the best matching item, pick its options and buy it"],["Buy the product"]]' ;;
            sokoban) choices='[["Walk next to the box","Push the box onto the target"],["Push the box onto the target"]]' ;;
        esac
        HIMAC_OVERRIDES+=(
            ++himac.schedule.phase_length=1
            ++himac.agent.blueprint_format=choice
            "++himac.agent.blueprint_choices=${choices}"
        )
    fi
    HIMAC_OVERRIDES+=(
        ++himac.group_size=2
        ++himac.agent.max_env_steps=$steps
        ++himac.agent.subgoal_step_budget=$budget
        ++himac.data.val_size=2                         # per validation split
        ++himac.pool.num_workers=1
        # no KL term on CPU: verl builds the FSDP2 reference model with CPUOffloadPolicy(pin_memory=True)
        # (workers/engine/fsdp/transformer_impl.py:459-462), which needs an accelerator
        actor_rollout_ref.actor.use_kl_loss=false
        data.train_batch_size=2
        data.max_response_length=64
        actor_rollout_ref.actor.ppo_mini_batch_size=2
        actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2
        trainer.total_training_steps=2
        trainer.total_epochs=1
        trainer.val_before_train=false
        trainer.test_freq=2
        trainer.save_freq=-1
        trainer.experiment_name="cpu_${method}_${env}"
    )
}

_himac_python() {
    if [[ -n "${PYTHON:-}" ]]; then
        echo "$PYTHON"
    elif [[ -x "${_HIMAC_REPO}/.venv/bin/python" ]]; then
        echo "${_HIMAC_REPO}/.venv/bin/python"
    else
        echo python3
    fi
}

# himac_recipe METHOD ENV [hydra overrides...]
himac_recipe() {
    local method="$1" env="$2"
    shift 2
    HIMAC_OVERRIDES=()
    _himac_env_overrides "$env"
    _himac_method_overrides "$method" "$env"
    _himac_budget_overrides "$method" "$env"
    case "${HIMAC_PRESET:-gpu}" in
        gpu) _himac_gpu_overrides "$method" "$env" ;;
        cpu) _himac_cpu_overrides "$method" "$env" ;;
        *) _himac_die "HIMAC_PRESET=${HIMAC_PRESET} (expected gpu or cpu)" ;;
    esac
    HIMAC_OVERRIDES+=("$@")
    if [[ "${HIMAC_PRINT_OVERRIDES:-0}" == 1 ]]; then
        printf '%s\n' "${HIMAC_OVERRIDES[@]}"
        return 0
    fi
    local python module=himac_verl.main
    python="$(_himac_python)"
    if [[ "${HIMAC_DRY_RUN:-0}" == 1 ]]; then module=himac_verl.trainer.validate; fi
    echo "+ $python -m $module ${HIMAC_OVERRIDES[*]}" >&2
    exec "$python" -m "$module" "${HIMAC_OVERRIDES[@]}"
}
