"""Both loops on the real Sokoban env through the real env pool (worker processes), with a scripted
server that plays the generator's solution: every greedy and sampled episode must win, and the returns
must equal the env's own shaped rewards for that plan."""

import asyncio
import re

import pytest

from himac_verl.agent.flat_loop import FlatAgentLoop
from himac_verl.agent.himac_loop import HiMACAgentLoop
from himac_verl.agent.testing import ScriptedServer, base_config, make_loop
from himac_verl.envs.base import TaskSpec
from himac_verl.envs.pool import get_env_pool
from himac_verl.envs.sokoban.env import SokobanEnv, level_seed
from himac_verl.envs.sokoban.generator import GeneratorConfig, generate_level
from himac_verl.models.tiny import build_tokenizer

TASK_IDS = ("4", "11")


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def solution(task_id):
    return generate_level(level_seed("train", task_id), GeneratorConfig(max_steps=15))[1]


def replay(task_id):
    """(rewards, anchors) of the solution played directly on a SokobanEnv."""
    env = SokobanEnv()
    first = env.reset(TaskSpec("sokoban", "train", task_id))
    rewards, anchors = [], [first.observation.anchor]
    for action in solution(task_id):
        step = env.step(action)
        rewards.append(step.reward)
        anchors.append(step.observation.anchor)
    assert step.won
    return rewards, anchors[:-1]


def solver_policy(call):
    """Planner: a fixed two-subgoal plan. Executor/flat: the solution's move for the shown step of the
    task whose boards include the shown board."""
    if "You are the planner" in call.prompt_text:
        return "<think>push it</think><plan>\n1. get behind the box\n2. push the box onto the target\n</plan>"
    board = re.search(r"Board \([^)]*\):\n(.*?)\nGive one move", call.prompt_text, re.DOTALL).group(1)
    step = int(re.search(r"step (\d+) of at most 15", call.prompt_text).group(1))
    (task_id,) = [t for t in TASK_IDS if board in boards(t)]
    return f"<think>next</think><action>{solution(task_id)[step - 1]}</action>"


_BOARDS = {}


def boards(task_id):
    if task_id not in _BOARDS:
        _BOARDS[task_id] = set(replay(task_id)[1])
    return _BOARDS[task_id]


def test_both_loops_solve_sokoban_through_the_real_pool(tok):
    assert boards(TASK_IDS[0]).isdisjoint(boards(TASK_IDS[1]))  # the policy can tell the tasks apart
    cfg = base_config(group_size=2, pool={"num_workers": 2})
    cfg["actor_rollout_ref"]["rollout"].update(prompt_length=2048, response_length=64)
    server = ScriptedServer(tok, solver_policy)

    async def main():
        himac = make_loop(HiMACAgentLoop, tok, server, cfg)
        flat = make_loop(FlatAgentLoop, tok, server, cfg)
        calls = [himac.run({"temperature": 1.0, "logprobs": True}, himac_env="sokoban", himac_split="train",
                           himac_task_id=t, himac_phase="joint", global_steps=1) for t in TASK_IDS]
        calls.append(flat.run({"temperature": 1.0, "logprobs": True}, himac_env="sokoban", himac_split="train",
                              himac_task_id=TASK_IDS[0], himac_phase="flat", global_steps=1))
        try:
            return await asyncio.gather(*calls)
        finally:
            await get_env_pool("sokoban", {}, num_workers=2).aclose()

    *himac_calls, flat_call = asyncio.run(main())
    for task_id, outs in zip(TASK_IDS, himac_calls, strict=True):
        rewards, anchors = replay(task_id)
        planners = [o for o in outs if o.extra_fields["role"] == "planner"]
        micro = [o for o in outs if o.extra_fields["pass"] == "micro"]
        assert len(planners) == 2 and sum(o.extra_fields["flags"]["selected"] for o in planners) == 1
        assert len(micro) == 2 * len(rewards)
        for episode_uid in {o.extra_fields["episode_uid"] for o in outs}:
            execs = [o.extra_fields for o in outs if o.extra_fields["episode_uid"] == episode_uid
                     and o.extra_fields["role"] == "executor"]
            assert [e["step_reward"] for e in execs] == pytest.approx(rewards)
            assert [e["anchor"] for e in execs] == anchors
            assert all(e["won"] and e["episode_return"] == pytest.approx(sum(rewards)) for e in execs)
            assert all(e["task_uid"] == f"sokoban/train/{task_id}" for e in execs)
            assert not any(e["flags"]["env_failure"] or e["flags"]["invalid_action"] for e in execs)
    rewards, _ = replay(TASK_IDS[0])
    assert len(flat_call) == 2 * len(rewards)
    assert all(o.extra_fields["won"] and o.extra_fields["role"] == "flat" for o in flat_call)
