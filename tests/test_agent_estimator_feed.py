"""The loops' outputs feed the foundation estimators with no glue: a joint HiMAC call through ``himac``
(macro group = the call's blueprints, micro group = the micro pass under z*), and a flat call through
``episode_grpo`` and ``gigpo``. Advantages are checked against hand computation."""

import asyncio
import re

import pytest
import torch

from himac_verl.advantage.dispatch import compute_advantage
from himac_verl.advantage.fields import SampleFields
from himac_verl.agent.flat_loop import FlatAgentLoop
from himac_verl.agent.himac_loop import HiMACAgentLoop
from himac_verl.agent.testing import InProcessPool, LineEnv, ScriptedServer, base_config, make_loop, pool_factory
from himac_verl.models.tiny import build_tokenizer

PLANS = {0: "<plan>\n1. go left\n</plan>", 1: "<plan>\n1. go right\n</plan>", 2: "no plan"}
MICRO = {0: ["right"], 1: ["stay", "right"], 2: ["left", "left", "left"]}  # returns 10, 9.9, 0 (step limit)


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def policy(call):
    text = call.prompt_text
    if "You are the planner" in text:
        return PLANS[int(re.search(r"/macro(\d+)$", call.request_id).group(1))]
    step = int(re.search(r"step (\d+) of at most", text).group(1))
    micro = re.search(r"/micro(\d+)$", call.request_id)
    if micro:
        return f"<action>{MICRO[int(micro.group(1))][step - 1]}</action>"
    return "<action>right</action>" if "go right" in text else "<action>left</action>"


def run(tok, loop_cls, phase, group_size=3):
    cfg = base_config(group_size=group_size, agent={"max_env_steps": 3})
    server = ScriptedServer(tok, policy)

    async def main():
        loop = make_loop(loop_cls, tok, server, cfg)
        with pool_factory(InProcessPool(lambda: LineEnv())):
            return await loop.run({"temperature": 1.0, "logprobs": True}, himac_env="sokoban", himac_split="train",
                                  himac_task_id="1", himac_phase=phase, global_steps=0)

    return asyncio.run(main())


def mask_of(outputs):
    width = max(len(o.response_mask) for o in outputs)
    return torch.tensor([o.response_mask + [0] * (width - len(o.response_mask)) for o in outputs])


def zscore(values):
    t = torch.tensor(values, dtype=torch.float64)
    return ((t - t.mean()) / (t.std() + 1e-6)).tolist()


def test_joint_call_feeds_himac_with_macro_and_micro_groups(tok):
    outs = run(tok, HiMACAgentLoop, "joint")
    extra = [o.extra_fields for o in outs]
    fields = SampleFields.from_extra_fields(extra)  # validates the contract's cross-sample invariants
    assert fields.num_tasks == 1 and fields.num_episodes == 6  # 3 scoring episodes + 3 micro executions
    planners = [e for e in extra if e["role"] == "planner"]
    micro = [e for e in extra if e["pass"] == "micro"]
    assert len(planners) == 3 and len({e["episode_uid"] for e in micro}) == 3  # macro group 3, micro group 3
    mask = mask_of(outs)
    adv, _ = compute_advantage("himac", extra, mask, {"stats": "episode", "penalty": "episode"})
    per_sample = [float(adv[i][mask[i].bool()][0]) for i in range(len(outs))]
    assert torch.all(adv[~mask.bool()] == 0)
    # macro: returns of the three blueprints: "go left" 0.0 (3 moves), "go right" 10.0, unparsable -2.6
    # (the default parse-failure return on Sokoban with 3 steps: worst return 3 * -0.2 - 1, minus 1)
    macro_want = dict(zip(["bp0", "bp1", "bp2"], zscore([0.0, 10.0, -2.6]), strict=True))
    for e, a in zip(extra, per_sample, strict=True):
        if e["role"] == "planner":
            assert a == pytest.approx(macro_want[e["blueprint_uid"].rsplit("/", 1)[1]], abs=1e-5)
        elif e["pass"] == "macro":
            assert a == 0.0  # the greedy scoring episodes never train
    micro_want = dict(zip(["micro0", "micro1", "micro2"], zscore([10.0, 9.9, 0.0]), strict=True))
    for e, a in zip(extra, per_sample, strict=True):
        if e["pass"] == "micro":
            assert e["blueprint_uid"].endswith("/bp1")
            assert a == pytest.approx(micro_want[e["episode_uid"].rsplit("/", 1)[1]], abs=1e-5)
    # the defaults (turn statistics, penalty on its turn): the micro group's turn scores are micro0: 10;
    # micro1: 10 - 0.1 on its invalid "stay" turn, then 10; micro2: 0, 0, 0 (env returns without penalty)
    adv, _ = compute_advantage("himac", extra, mask)
    turn_scores = {("micro0", 1): 10.0, ("micro1", 1): 9.9, ("micro1", 2): 10.0,
                   ("micro2", 1): 0.0, ("micro2", 2): 0.0, ("micro2", 3): 0.0}
    want = dict(zip(turn_scores, zscore(list(turn_scores.values())), strict=True))
    for i, e in enumerate(extra):
        if e["pass"] == "micro":
            key = (e["episode_uid"].rsplit("/", 1)[1], e["turn"])
            assert float(adv[i][mask[i].bool()][0]) == pytest.approx(want[key], abs=1e-5)


def test_flat_call_feeds_episode_grpo_and_gigpo(tok):
    outs = run(tok, FlatAgentLoop, "flat", group_size=4)
    extra = [o.extra_fields for o in outs]
    mask = mask_of(outs)
    for name in ("episode_grpo", "gigpo"):
        adv, _ = compute_advantage(name, extra, mask)
        assert adv.shape == mask.shape and torch.isfinite(adv).all()
    # every flat episode wins at once (task 1, "right"): equal returns give zero episode advantages
    adv, _ = compute_advantage("episode_grpo", extra, mask)
    assert torch.all(adv == 0)
