"""The HiMAC agent loop against a scripted fake server and an in-process scripted env (LineEnv).

LineEnv: start at 0, the task id is the goal; "right"/"left" move (reward 0), anything else is invalid
(-0.1), reaching the goal gives +10 and ends the episode (won). Prompts come from tiny test templates so
every prompt and token can be written out by hand.
"""

import asyncio
import re

import numpy as np
import pytest

from himac_verl.agent.himac_loop import HiMACAgentLoop
from himac_verl.agent.samples import EXTRA_FIELD_KEYS, FLAG_NAMES
from himac_verl.agent.testing import (
    ABORT,
    InProcessPool,
    LineEnv,
    ScriptedServer,
    base_config,
    make_loop,
    pool_factory,
)
from himac_verl.models.tiny import build_tokenizer

SAMPLED = {"temperature": 1.0, "top_p": 0.9, "top_k": 20, "repetition_penalty": 1.0, "logprobs": True}
PLAN_RIGHT = "<plan>\n1. go right\n2. go right again\n</plan>"
BP_RIGHT = "1. go right\n2. go right again"


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    root = tmp_path_factory.mktemp("templates")
    (root / "line").mkdir()
    (root / "line" / "planner.v2.txt").write_text("P|$instruction|$observation|$admissible")
    (root / "line" / "executor.v2.txt").write_text(
        "E|$blueprint|$subgoal_number/$num_subgoals:$subgoal|H:$history|O:$observation|s$step")
    return str(root)


def executor_text(blueprint, k, num, subgoal, history, obs, step):
    return f"E|{blueprint}|{k}/{num}:{subgoal}|H:{history}|O:{obs}|s{step}"


def hist(*entries):
    """entries: (step, observation, action)"""
    if not entries:
        return "(none yet)"
    return "\n".join(f"[Step {s}] Observation: {o}\n[Step {s}] Action: {a}" for s, o, a in entries)


def chat_ids(tok, text):
    return list(tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                        tokenize=True)["input_ids"])


def parse_exec(text):
    m = re.search(r"\|(\d+)/(\d+):(.*?)\|H:", text)
    pos = int(re.search(r"O:pos=(-?\d+)", text).group(1))
    return int(m.group(1)), m.group(3), pos


def run_call(tok, policy, *, templates, task_id="2", phase="joint", env=None, pool=None, server=None,
             rollout=None, global_steps=3, row_extra=None, **agent):
    himac = agent.pop("himac", {})
    agent.setdefault("max_env_steps", 6)
    agent.setdefault("subgoal_step_budget", 3)
    agent["template_dir"] = templates
    cfg = base_config(agent=agent, **himac)
    if rollout:
        cfg["actor_rollout_ref"]["rollout"].update(rollout)
    server = server or ScriptedServer(tok, policy)
    pool = pool or InProcessPool(env or (lambda: LineEnv(max_steps=10)))
    row = {"himac_env": "line", "himac_split": "train", "himac_task_id": task_id, "himac_phase": phase,
           "global_steps": global_steps, **(row_extra or {})}

    async def main():
        loop = make_loop(HiMACAgentLoop, tok, server, cfg)
        with pool_factory(pool):
            return await loop.run(dict(SAMPLED), **row)

    return asyncio.run(main()), server, pool


def planner_or(executor):
    """A policy: planner turns write PLAN_RIGHT, executor turns call ``executor(k, subgoal, pos, call)``."""
    def policy(call):
        if "P|" in call.prompt_text:
            return PLAN_RIGHT
        k, subgoal, pos = parse_exec(call.prompt_text)
        return executor(k, subgoal, pos, call)
    return policy


def fields(outputs, key):
    return [o.extra_fields[key] for o in outputs]


def set_flags(output):
    return sorted(k for k, v in output.extra_fields["flags"].items() if v)


# ---- exact tokens, masks and fields ---------------------------------------------------------------------

def test_planner_turn_exact_tokens_masks_fields(tok, templates):
    outs, server, _ = run_call(tok, planner_or(lambda k, g, pos, c: "<action>right</action>"),
                               templates=templates, phase="eval")
    planner = outs[0]
    assert planner.prompt_ids == chat_ids(tok, "P|reach 2|pos=0|")
    want = list(tok.encode(PLAN_RIGHT, add_special_tokens=False)) + [tok.eos_token_id]
    assert planner.response_ids == want
    assert planner.response_mask == [1] * len(want)
    assert planner.response_logprobs == pytest.approx([-(i + 1) / 100 for i in range(len(want))])
    e = planner.extra_fields
    assert (e["role"], e["turn"], e["subgoal_index"], e["pass"], e["step_reward"]) == ("planner", 0, -1, "macro", 0.0)
    assert e["task_uid"] == "line/train/2" and e["anchor"] == "0"
    assert e["episode_return"] == 10.0 and e["won"] is True and e["num_subgoals"] == 2 and e["env_steps"] == 2
    assert (e["min_global_steps"], e["max_global_steps"]) == (7, 7)
    assert planner.reward_score == 10.0
    assert e["reward_extra_info"] == {"acc": 1.0, "episode_return": 10.0, "score": 1.0, "env_steps": 2.0}
    assert set_flags(planner) == []
    # the executor samples of the same episode share its uids
    assert len(outs) == 3
    assert fields(outs, "episode_uid") == [e["episode_uid"]] * 3
    assert fields(outs, "blueprint_uid") == [e["blueprint_uid"]] * 3
    assert fields(outs, "role") == ["planner", "executor", "executor"]
    # every output carries the same key set, in the contract's order, with all flags
    for o in outs:
        assert tuple(o.extra_fields) == EXTRA_FIELD_KEYS
        assert tuple(o.extra_fields["flags"]) == FLAG_NAMES
    # eval: everything greedy, responses capped at rollout.response_length
    for call in server.calls:
        assert (call.sampling_params["temperature"], call.sampling_params["top_k"]) == (0.0, -1)
        assert call.sampling_params["max_tokens"] == 64
        assert call.request_id == e["episode_uid"]


def test_sub_done_advances_after_the_action_and_masks_history(tok, templates):
    def executor(k, subgoal, pos, call):
        return "<think>ok</think><action>right</action> <sub_done>" if k == 1 else "<action>right</action>"

    outs, server, _ = run_call(tok, planner_or(executor), templates=templates, phase="eval", task_id="3")
    execs = outs[1:]
    assert fields(execs, "subgoal_index") == [0, 1, 1]
    assert fields(execs, "turn") == [1, 2, 3]
    assert fields(execs, "anchor") == ["0", "1", "2"]
    assert fields(execs, "step_reward") == [0.0, 0.0, 10.0]
    assert [set_flags(o) for o in execs] == [["sub_done"], [], []]
    # turn 1: first subgoal, no history; turn 2: second subgoal, and the first subgoal's step is NOT shown
    assert execs[0].prompt_ids == chat_ids(tok, executor_text(BP_RIGHT, 1, 2, "go right", hist(), "pos=0", 1))
    assert execs[1].prompt_ids == chat_ids(tok, executor_text(BP_RIGHT, 2, 2, "go right again", hist(), "pos=1", 2))
    # turn 3 shows only the second subgoal's segment (step 2)
    assert execs[2].prompt_ids == chat_ids(
        tok, executor_text(BP_RIGHT, 2, 2, "go right again", hist((2, "pos=1", "right")), "pos=2", 3))
    reply = "<think>ok</think><action>right</action> <sub_done>"
    assert execs[0].response_ids == list(tok.encode(reply, add_special_tokens=False)) + [tok.eos_token_id]
    assert all(o.response_mask == [1] * len(o.response_ids) for o in outs)
    assert fields(outs, "episode_return") == [10.0] * 4


def test_sub_done_only_turns_are_charged_like_invalid_ones(tok, templates):
    """A ``<sub_done>`` with no action is an env step like an invalid action (-0.1, one step of the budget):
    refused before any step on the subgoal, allowed after one (docs/credit.md: no free turns)."""
    def executor(k, subgoal, pos, call):
        return "<sub_done>" if k == 1 else "<action>right</action>"

    outs, _, _ = run_call(tok, planner_or(executor), templates=templates, phase="eval", task_id="2")
    execs = outs[1:]
    assert fields(execs, "subgoal_index") == [0, 0, 1, 1]
    assert fields(execs, "anchor") == ["0", "0", "0", "1"]  # the sub_done-only turns did not move
    assert fields(execs, "step_reward") == pytest.approx([-0.1, -0.1, 0.0, 10.0])
    assert fields(execs, "penalty") == pytest.approx([-0.1, -0.1, 0.0, 0.0])
    assert [set_flags(o) for o in execs] == [["invalid_action", "sub_done_refused"], ["invalid_action", "sub_done"],
                                             [], []]
    assert outs[0].extra_fields["env_steps"] == 4  # every executor turn is an env step
    assert outs[0].extra_fields["episode_return"] == pytest.approx(9.8)
    assert outs[0].extra_fields["episode_penalty"] == pytest.approx(-0.2)
    assert execs[2].prompt_ids == chat_ids(tok, executor_text(BP_RIGHT, 2, 2, "go right again", hist(), "pos=0", 3))


def test_budget_forces_the_advance_and_last_subgoal_continues(tok, templates):
    plan = "<plan>\n1. a\n2. b\n3. c\n</plan>"

    def policy(call):
        return plan if "P|" in call.prompt_text else "<action>left</action>"

    outs, _, _ = run_call(tok, policy, templates=templates, phase="eval", task_id="5",
                          max_env_steps=7, subgoal_step_budget=2)
    execs = outs[1:]
    assert fields(execs, "subgoal_index") == [0, 0, 1, 1, 2, 2, 2]
    assert [o.extra_fields["flags"]["budget_forced"] for o in execs] == [False, True, False, True, False, False, False]
    # the loop's step limit ended the episode: flagged on every sample of the episode, planner included
    assert all(o.extra_fields["flags"]["step_limit"] for o in outs)
    assert outs[0].extra_fields["won"] is False and outs[0].extra_fields["env_steps"] == 7
    # after the forced advance, the new subgoal's history starts empty
    bp = "1. a\n2. b\n3. c"
    assert execs[1].prompt_ids == chat_ids(tok, executor_text(bp, 1, 3, "a", hist((1, "pos=0", "left")), "pos=-1", 2))
    assert execs[2].prompt_ids == chat_ids(tok, executor_text(bp, 2, 3, "b", hist(), "pos=-2", 3))


def test_parse_failure_is_a_sample_with_the_failure_return(tok, templates):
    outs, server, _ = run_call(tok, lambda c: "1. go right", templates=templates, phase="eval",
                               max_env_steps=6)
    assert len(outs) == 1 and len(server.calls) == 1  # the episode was not executed
    e = outs[0].extra_fields
    assert e["role"] == "planner" and e["flags"]["parse_failure"] and e["parse_error"] == "no_plan_block"
    # default: the worst parsed return (6 invalid steps: -0.6) minus the margin 1.0
    assert e["episode_return"] == pytest.approx(-1.6)
    assert outs[0].reward_score == pytest.approx(-1.6)
    assert (e["won"], e["env_steps"], e["num_subgoals"]) == (False, 0, 0)
    outs, _, _ = run_call(tok, lambda c: "<plan>\nnot numbered\n</plan>", templates=templates, phase="eval",
                          parse_failure_return=-3.0)
    assert outs[0].extra_fields["episode_return"] == -3.0 and outs[0].extra_fields["parse_error"] == "bad_line"


def test_all_blueprints_unparsable_skips_the_micro_pass(tok, templates):
    outs, server, _ = run_call(tok, lambda c: "no plan at all", templates=templates, phase="joint")
    assert fields(outs, "role") == ["planner", "planner"]
    assert len(server.calls) == 2


# ---- phases -----------------------------------------------------------------------------------------------

PLANS = {0: "<plan>\n1. go left\n</plan>", 1: "<plan>\n1. go right\n</plan>", 2: "no plan"}


def macro_index(call):
    return int(re.search(r"/macro(\d+)$", call.request_id).group(1))


def phase_policy(call):
    if "P|" in call.prompt_text:
        return PLANS[macro_index(call)]
    _, subgoal, _ = parse_exec(call.prompt_text)
    return "<action>right</action>" if "right" in subgoal else "<action>left</action>"


@pytest.mark.parametrize("phase", ["macro", "micro", "joint"])
def test_phases_macro_scoring_best_blueprint_and_micro_pass(tok, templates, phase):
    outs, server, _ = run_call(tok, phase_policy, templates=templates, phase=phase, task_id="1",
                               himac={"group_size": 3}, max_env_steps=3)
    planners = [o for o in outs if o.extra_fields["role"] == "planner"]
    assert len(planners) == 3 and all(o.extra_fields["pass"] == "macro" for o in planners)
    by_bp = {o.extra_fields["blueprint_uid"]: o.extra_fields for o in planners}
    rets = sorted(e["episode_return"] for e in by_bp.values())
    assert rets == pytest.approx([-1.3, 0.0, 10.0])  # parse failure (3 * -0.1 - 1), go left (3 moves), go right (win)
    macro_exec = [o for o in outs if o.extra_fields["role"] == "executor" and o.extra_fields["pass"] == "macro"]
    assert len(macro_exec) == 3 + 1  # "go left": 3 turns to the step limit; "go right": 1 winning turn
    planner_calls = [c for c in server.calls if "P|" in c.prompt_text]
    assert all(c.sampling_params["temperature"] == 1.0 for c in planner_calls)  # blueprints are sampled
    scoring_calls = [c for c in server.calls if "P|" not in c.prompt_text and "/macro" in c.request_id]
    assert scoring_calls and all(c.sampling_params["temperature"] == 0.0 for c in scoring_calls)  # greedy
    micro = [o for o in outs if o.extra_fields["pass"] == "micro"]
    best_uid = next(u for u, e in by_bp.items() if e["episode_return"] == 10.0)
    if phase == "macro":
        assert micro == [] and not any(e["flags"]["selected"] for e in by_bp.values())
        return
    assert len(micro) == 3 and all(o.extra_fields["role"] == "executor" for o in micro)
    assert {o.extra_fields["blueprint_uid"] for o in micro} == {best_uid}
    assert len({o.extra_fields["episode_uid"] for o in micro}) == 3
    assert [u for u, e in by_bp.items() if e["flags"]["selected"]] == [best_uid]
    micro_calls = [c for c in server.calls if "/micro" in c.request_id]
    assert len(micro_calls) == 3 and all(c.sampling_params["temperature"] == 1.0 for c in micro_calls)
    assert all("1/1:go right|" in c.prompt_text for c in micro_calls)
    assert fields(micro, "won") == [True] * 3


def test_flat_phase_is_rejected_and_bad_rows_are_named(tok, templates):
    with pytest.raises(ValueError, match="flat_agent"):
        run_call(tok, phase_policy, templates=templates, phase="flat")
    with pytest.raises(ValueError, match="himac_phase='warmup'"):
        run_call(tok, phase_policy, templates=templates, phase="warmup")
    with pytest.raises(ValueError, match="himac_task_id"):
        run_call(tok, phase_policy, templates=templates, row_extra={"himac_task_id": None})


def test_phase_default_comes_from_config(tok, templates):
    outs, _, _ = run_call(tok, phase_policy, templates=templates, phase=None, task_id="1",
                          himac={"group_size": 3, "phase": "macro"}, max_env_steps=3)
    assert {o.extra_fields["pass"] for o in outs} == {"macro"}


# ---- ablations --------------------------------------------------------------------------------------------

def test_no_sub_done_ablation_switches_on_the_budget_only(tok, templates):
    def executor(k, subgoal, pos, call):
        return "<sub_done>" if (k, pos) == (1, 1) else "<action>right</action> <sub_done>"

    outs, _, _ = run_call(tok, planner_or(executor), templates=templates, phase="eval", task_id="3",
                          use_sub_done=False, subgoal_step_budget=2, max_env_steps=6)
    execs = outs[1:]
    # right (pos 1), "<sub_done>" alone is an invalid action in the ablation (-0.1), budget advances, right, right
    assert fields(execs, "subgoal_index") == [0, 0, 1, 1]
    assert fields(execs, "step_reward") == pytest.approx([0.0, -0.1, 0.0, 10.0])
    assert [set_flags(o) for o in execs] == [[], ["budget_forced", "invalid_action"], [], []]
    assert outs[0].extra_fields["episode_return"] == pytest.approx(9.9)


def test_random_blueprint_ablation_is_seeded(tok, templates):
    def selected(global_steps):
        outs, _, _ = run_call(tok, phase_policy, templates=templates, phase="micro", task_id="1",
                              himac={"group_size": 3}, max_env_steps=2, blueprint_selection="random",
                              seed=5, global_steps=global_steps)
        planners = [o for o in outs if o.extra_fields["role"] == "planner"]
        return [int(o.extra_fields["blueprint_uid"].rsplit("bp", 1)[1]) for o in planners
                if o.extra_fields["flags"]["selected"]]

    picks = [selected(g) for g in range(8)]
    assert all(len(p) == 1 and p[0] in (0, 1) for p in picks)  # never the unparsable blueprint 2
    assert {p[0] for p in picks} == {0, 1}  # not always the best one
    assert selected(3) == picks[3]  # same seed, task and step -> same pick


# ---- bad input --------------------------------------------------------------------------------------------

def test_empty_and_garbage_outputs_are_invalid_actions_and_the_episode_goes_on(tok, templates):
    replies = iter(["", "\u0000\ufffd junk <action></action>", "<action>right</action>"])
    outs, _, _ = run_call(tok, planner_or(lambda k, g, pos, c: next(replies)), templates=templates,
                          phase="eval", task_id="1")
    execs = outs[1:]
    assert fields(execs, "step_reward") == pytest.approx([-0.1, -0.1, 10.0])
    assert [o.extra_fields["flags"]["invalid_action"] for o in execs] == [True, True, False]
    assert outs[0].extra_fields["episode_return"] == pytest.approx(9.8)
    assert execs[2].prompt_ids == chat_ids(tok, executor_text(
        BP_RIGHT, 1, 2, "go right", hist((1, "pos=0", "(no valid action)"), (2, "pos=0", "(no valid action)")),
        "pos=0", 3))


def test_over_long_output_is_cut_at_response_length_and_flagged(tok, templates):
    long_reply = "<think>" + "up down left right " * 40 + "</think><action>right</action>"
    outs, server, _ = run_call(tok, planner_or(lambda k, g, pos, c: long_reply), templates=templates,
                               phase="eval", task_id="1", max_env_steps=2)
    execs = outs[1:]
    assert all(len(o.response_ids) == 64 for o in execs)
    assert all(o.response_ids[-1] != tok.eos_token_id for o in execs)
    assert all(o.extra_fields["flags"]["truncated"] for o in execs)
    assert not outs[0].extra_fields["flags"]["truncated"]
    assert fields(execs, "step_reward") == pytest.approx([-0.1, -0.1])  # the action was cut off: invalid


@pytest.mark.parametrize("failure", [RuntimeError("server down"), ABORT])
def test_server_error_mid_episode_ends_it_flagged_and_keeps_its_samples(tok, templates, failure):
    def executor(k, subgoal, pos, call):
        return failure if pos == 1 else "<action>right</action>"

    outs, _, _ = run_call(tok, planner_or(executor), templates=templates, phase="eval", task_id="3")
    assert fields(outs, "role") == ["planner", "executor"]
    assert all(o.extra_fields["flags"]["server_error"] for o in outs)
    assert fields(outs, "episode_return") == [0.0, 0.0] and fields(outs, "won") == [False, False]


def test_missing_logprobs_or_stamps(tok, templates):
    class NoLogprobs(ScriptedServer):
        async def generate(self, request_id, **kw):
            out = await super().generate(request_id, **kw)
            return out.model_copy(update={"log_probs": None}) if "E|" in self.calls[-1].prompt_text else out

    server = NoLogprobs(tok, planner_or(lambda k, g, pos, c: "<action>right</action>"))
    outs, _, _ = run_call(tok, None, server=server, templates=templates, phase="eval")
    assert fields(outs, "role") == ["planner"] and outs[0].extra_fields["flags"]["server_error"]
    unstamped = ScriptedServer(tok, planner_or(lambda k, g, pos, c: "<action>right</action>"), global_steps=None)
    outs, _, _ = run_call(tok, None, server=unstamped, templates=templates, phase="eval", global_steps=11)
    assert fields(outs, "min_global_steps") == [11] * 3 and fields(outs, "max_global_steps") == [11] * 3


def test_env_crash_ends_the_episode_flagged_with_rewards_so_far(tok, templates):
    def executor(k, subgoal, pos, call):
        return "<action>crash</action>" if pos == 1 else "<action>right</action>"

    outs, _, _ = run_call(tok, planner_or(executor), templates=templates, phase="micro", task_id="3",
                          himac={"group_size": 2})
    assert outs, "the call still returns its list"
    assert all(o.extra_fields["flags"]["env_failure"] for o in outs)
    crash_turns = [o for o in outs if o.extra_fields["turn"] == 2]
    assert crash_turns and all(o.extra_fields["step_reward"] == 0.0 for o in crash_turns)
    assert set(fields(outs, "episode_return")) == {0.0}
    # no blueprint was scored cleanly, so no z* and no micro pass
    assert {o.extra_fields["pass"] for o in outs} == {"macro"}


def test_reset_failure_is_retried_once_then_the_episode_is_dropped(tok, templates):
    policy = planner_or(lambda k, g, pos, c: "<action>right</action>")
    pool = InProcessPool(lambda: LineEnv(), reset_failures=1)
    outs, _, _ = run_call(tok, policy, templates=templates, phase="eval", task_id="1", pool=pool)
    assert fields(outs, "role") == ["planner", "executor"] and outs[0].extra_fields["won"]
    pool = InProcessPool(lambda: LineEnv(), reset_failures=2)
    outs, server, _ = run_call(tok, policy, templates=templates, phase="eval", task_id="1", pool=pool)
    assert outs == [] and server.calls == []


def test_a_failed_planner_call_drops_only_its_episode(tok, templates):
    def policy(call):
        if "P|" in call.prompt_text:
            return RuntimeError("boom") if call.request_id.endswith("macro0") else PLAN_RIGHT
        return "<action>right</action>"

    outs, _, _ = run_call(tok, policy, templates=templates, phase="macro", task_id="1", himac={"group_size": 2})
    assert len({o.extra_fields["episode_uid"] for o in outs}) == 1
    assert fields(outs, "role") == ["planner", "executor"]


# ---- prompt length ---------------------------------------------------------------------------------------

def test_older_history_is_dropped_to_fit_the_prompt_length(tok, templates):
    outs, server, _ = run_call(tok, planner_or(lambda k, g, pos, c: "<action>left</action>"), templates=templates,
                               phase="eval", task_id="9", max_env_steps=8, subgoal_step_budget=8)
    full = [len(o.prompt_ids) for o in outs[1:]]
    limit = full[-1] - 1  # the last turn's full prompt does not fit
    outs2, _, _ = run_call(tok, planner_or(lambda k, g, pos, c: "<action>left</action>"), templates=templates,
                           phase="eval", task_id="9", max_env_steps=8, subgoal_step_budget=8,
                           rollout={"prompt_length": limit})
    last = outs2[-1]
    assert len(last.prompt_ids) <= limit and last.extra_fields["flags"]["prompt_truncated"]
    text = tok.decode(last.prompt_ids)
    assert "[Step 7] Action: left" in text and "[Step 1]" not in text  # newest kept, oldest dropped
    assert text.startswith("<|im_start|>user\nE|")  # the task part of the prompt is intact
    assert not outs2[1].extra_fields["flags"]["prompt_truncated"]


# ---- images ---------------------------------------------------------------------------------------------

class FakeVLBuilder:
    """Stands in for verl's VL Continuous Token builder: text tokens, then 4 image-pad ids per image."""

    IMAGE_PAD = 5

    def __init__(self, tok):
        self.tok, self.seen = tok, []

    @staticmethod
    def supports_multimodal():
        return True

    def build_initial_tokens(self, messages, *, images=None, **kw):
        self.seen.append((messages, images))
        text = "".join(b["text"] for b in messages[0]["content"] if b["type"] == "text")
        return [self.IMAGE_PAD] * 4 * len(images or []) + list(self.tok.encode(text, add_special_tokens=False))


def test_image_goes_to_the_server_and_stays_with_its_sample(tok, templates):
    server = ScriptedServer(tok, planner_or(lambda k, g, pos, c: "<action>right</action>"))
    cfg = base_config(agent={"max_env_steps": 4, "subgoal_step_budget": 2, "template_dir": templates})
    pool = InProcessPool(lambda: LineEnv(image=True))
    builder = FakeVLBuilder(tok)

    async def main():
        loop = make_loop(HiMACAgentLoop, tok, server, cfg)
        loop.processor, loop.continuous_token_builder = object(), builder
        with pool_factory(pool):
            return await loop.run(dict(SAMPLED), himac_env="line", himac_split="train", himac_task_id="2",
                                  himac_phase="eval", global_steps=1)

    outs = asyncio.run(main())
    assert fields(outs, "anchor") == ["0", "0", "1"]
    for out, call, (messages, images), pos in zip(outs, server.calls, builder.seen, [0, 0, 1], strict=True):
        (img,) = call.image_data
        assert np.array_equal(np.asarray(img), np.full((8, 8, 3), 10 * pos, dtype=np.uint8))
        assert out.multi_modal_data == {"images": [img]}
        assert images == [img] and messages[0]["content"][0] == {"type": "image", "image": img}
        assert out.prompt_ids[:4] == [FakeVLBuilder.IMAGE_PAD] * 4


def test_an_image_with_a_text_only_model_is_a_clear_error(tok, templates):
    with pytest.raises(ValueError, match="Multimodal inputs require"):
        run_call(tok, planner_or(lambda k, g, pos, c: "<action>right</action>"), templates=templates,
                 phase="eval", env=lambda: LineEnv(image=True))
