"""The flat baseline loop (GRPO / GiGPO) against a scripted fake server and the in-process LineEnv."""

import asyncio
import re

import pytest

from himac_verl.agent.flat_loop import FlatAgentLoop
from himac_verl.agent.samples import EXTRA_FIELD_KEYS
from himac_verl.agent.testing import InProcessPool, LineEnv, ScriptedServer, base_config, make_loop, pool_factory
from himac_verl.models.tiny import build_tokenizer

SAMPLED = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "repetition_penalty": 1.0, "logprobs": True}


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    root = tmp_path_factory.mktemp("templates")
    (root / "line").mkdir()
    (root / "line" / "flat.v2.txt").write_text("F|$instruction|H:$history|O:$observation|$admissible|s$step")
    return str(root)


def run_flat(tok, policy, templates, phase="flat", task_id="2", env=None, group_size=3, **agent):
    agent.setdefault("max_env_steps", 5)
    agent.setdefault("subgoal_step_budget", 5)
    cfg = base_config(agent={**agent, "template_dir": templates}, group_size=group_size, phase="flat")
    server = ScriptedServer(tok, policy)
    pool = InProcessPool(env or (lambda: LineEnv(max_steps=10)))

    async def main():
        loop = make_loop(FlatAgentLoop, tok, server, cfg)
        with pool_factory(pool):
            return await loop.run(dict(SAMPLED), himac_env="line", himac_split="train", himac_task_id=task_id,
                                  himac_phase=phase, global_steps=2)

    return asyncio.run(main()), server


def pos_of(call):
    return int(re.search(r"O:pos=(-?\d+)", call.prompt_text).group(1))


def chat_ids(tok, text):
    return list(tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                        tokenize=True)["input_ids"])


def test_flat_group_fields_and_sampling(tok, templates):
    outs, server = run_flat(tok, lambda c: "<think>go</think><action>right</action>", templates)
    assert len(outs) == 3 * 2  # three episodes of two turns
    assert len({o.extra_fields["episode_uid"] for o in outs}) == 3
    for o in outs:
        e = o.extra_fields
        assert tuple(e) == EXTRA_FIELD_KEYS
        assert (e["role"], e["pass"], e["blueprint_uid"], e["subgoal_index"]) == ("flat", "micro", "", -1)
        assert e["task_uid"] == "line/train/2" and e["won"] and e["episode_return"] == 10.0
        assert o.reward_score == 10.0 and o.response_mask == [1] * len(o.response_ids)
    assert [o.extra_fields["turn"] for o in outs] == [1, 2] * 3
    assert [o.extra_fields["step_reward"] for o in outs] == [0.0, 10.0] * 3
    assert [o.extra_fields["anchor"] for o in outs] == ["0", "1"] * 3
    assert all(c.sampling_params["temperature"] == 1.0 and c.sampling_params["max_tokens"] == 64
               for c in server.calls)
    assert outs[0].prompt_ids == chat_ids(tok, "F|reach 2|H:(none yet)|O:pos=0||s1")


def test_flat_history_shows_the_last_k_steps(tok, templates):
    outs, _ = run_flat(tok, lambda c: "<action>left</action>", templates, group_size=2, task_id="9",
                       flat_history_turns=2)
    first = [o for o in outs if o.extra_fields["episode_uid"] == outs[0].extra_fields["episode_uid"]]
    assert len(first) == 5 and all(o.extra_fields["flags"]["step_limit"] for o in first)
    want = ("F|reach 9|H:[Step 2] Observation: pos=-1\n[Step 2] Action: left\n"
            "[Step 3] Observation: pos=-2\n[Step 3] Action: left|O:pos=-3||s4")
    assert first[3].prompt_ids == chat_ids(tok, want)


def test_flat_eval_is_one_greedy_episode(tok, templates):
    outs, server = run_flat(tok, lambda c: "<action>right</action>", templates, phase="eval")
    assert len({o.extra_fields["episode_uid"] for o in outs}) == 1 and len(outs) == 2
    assert all(c.sampling_params["temperature"] == 0.0 for c in server.calls)
    assert outs[-1].extra_fields["reward_extra_info"]["acc"] == 1.0


def test_flat_bad_input_invalid_server_error_env_crash(tok, templates):
    def policy(call):
        pos = pos_of(call)
        if call.request_id.endswith("flat0"):
            return "" if "H:(none yet)" in call.prompt_text else "<action>crash</action>"
        if call.request_id.endswith("flat1"):
            return RuntimeError("server gone") if pos == 1 else "<action>right</action>"
        return "<action>right</action>"

    outs, _ = run_flat(tok, policy, templates, group_size=3, task_id="3")
    by_ep = {}
    for o in outs:
        by_ep.setdefault(o.extra_fields["episode_uid"].rsplit("/", 1)[1], []).append(o.extra_fields)
    crash, server_err, fine = by_ep["flat0"], by_ep["flat1"], by_ep["flat2"]
    assert [e["step_reward"] for e in crash] == pytest.approx([-0.1, 0.0])  # invalid, then the crash turn
    assert all(e["flags"]["env_failure"] for e in crash) and crash[0]["flags"]["invalid_action"]
    assert crash[0]["episode_return"] == pytest.approx(-0.1)
    assert len(server_err) == 1 and server_err[0]["flags"]["server_error"] and server_err[0]["episode_return"] == 0.0
    assert [e["step_reward"] for e in fine] == [0.0, 0.0, 10.0] and fine[0]["won"]
    assert not any(e["flags"]["env_failure"] or e["flags"]["server_error"] for e in fine)
