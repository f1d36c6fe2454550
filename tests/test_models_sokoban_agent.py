"""The Sokoban starting model's pieces (himac_verl/models/sokoban_agent.py): its tokenizer, its training
prompts (byte-identical to the loops' own), its noise rates, and a tiny end-to-end build."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from himac_verl.models import sokoban_agent as sa

SMALL = dict(planner_examples=60, executor_examples=120, flat_examples=120)


@pytest.fixture(scope="module")
def spec():
    return sa.make_spec(**SMALL)


@pytest.fixture(scope="module")
def texts(spec):
    return sa.make_text_examples(spec)


@pytest.fixture(scope="module")
def tok(texts, spec):
    return sa.train_tokenizer(sa.tokenizer_corpus(texts), spec.vocab_size)


def test_tokenizer_round_trips_and_keeps_the_board_a_grid(tok, texts):
    assert len(tok) <= 1024
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert len(tok.encode("\n", add_special_tokens=False)) == 1
    for symbol in sa.BOARD_SYMBOLS:
        assert len(tok.encode(symbol, add_special_tokens=False)) == 1, symbol
    for ex in texts[::7]:
        for text in (ex.prompt, ex.target):
            assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    # a board row is one token per cell: 6 rows of 6 cells, newlines between
    ex = next(e for e in texts if e.role == "flat")
    board = re.search(r"\):\n(.*?)\nGive one move", ex.prompt, re.DOTALL).group(1)
    ids = tok.encode(board, add_special_tokens=False)
    assert len(ids) == 6 * 7 - 1
    assert [tok.decode([i]) for i in ids] == list(board)


def test_encoded_examples_mark_the_board_and_end_in_eos(tok, texts):
    examples = sa.encode_examples(tok, texts[:40] + texts[-40:])
    for ex in examples:
        assert ex.response_ids[-1] == tok.eos_token_id
        b0, b1 = ex.board
        if ex.role != "aux":
            assert b1 - b0 == 43  # the grid plus the newline before and after it
        assert "@" in tok.decode(ex.prompt_ids[b0:b1]) or "+" in tok.decode(ex.prompt_ids[b0:b1])


def test_noise_rates_match_the_spec():
    spec = sa.make_spec(planner_examples=3000, executor_examples=3000, flat_examples=3000)
    texts = sa.make_text_examples(spec)
    planner = [e.noise for e in texts if e.role == "planner"]
    executor = [e.noise for e in texts if e.role == "executor"]
    flat = [e.noise for e in texts if e.role == "flat"]

    def rate(rows, key, where=lambda r: True):
        rows = [r for r in rows if where(r)]
        return sum(r[key] for r in rows) / len(rows)

    def close(value, want, n):
        return abs(value - want) <= 4 * (want * (1 - want) / n) ** 0.5 + 0.01

    n = len(planner)
    assert close(rate(planner, "wrong_push"), spec.plan_wrong_push_prob, n)
    assert close(rate(planner, "malformed"), spec.plan_malformed_prob, n)
    # missing (>= 2 subgoals) and extra pushes can be skipped, so they stay at or below their rates
    assert 0 < rate(planner, "missing_push") <= spec.plan_missing_push_prob + 0.02
    assert 0 < rate(planner, "extra_push") <= spec.plan_extra_push_prob + 0.02
    assert close(rate(executor, "move"), spec.executor_move_noise_prob, len(executor))
    done = [r for r in executor if r["completes"]]
    assert close(rate(done, "sub_done_omitted"), spec.sub_done_omit_prob, len(done))
    assert close(rate(executor, "sub_done_spurious", lambda r: not r["completes"]), spec.sub_done_spurious_prob,
                 len(executor) - len(done))
    assert close(rate(flat, "move"), spec.flat_move_noise_prob, len(flat))
    # the targets say what the flags say
    for ex in (e for e in texts if e.role == "executor"):
        tagged = ex.target.endswith(sa.SUB_DONE)
        assert tagged == ((ex.noise["completes"] and not ex.noise["sub_done_omitted"]) or ex.noise["sub_done_spurious"])
    malformed = [e for e in texts if e.role == "planner" and e.noise["malformed"]]
    assert malformed and all(not e.target.endswith("</plan>") for e in malformed)


def _clean(spec):
    zero = {k: 0.0 for k in sa.SokobanAgentSpec.__dataclass_fields__ if k.endswith("_prob")}
    return sa.make_spec(**{**sa.spec_json(spec), **zero, "env_options": dict(spec.env_options)})


def test_training_prompts_are_the_loops_prompts(tok, spec):
    """The real loops, with a scripted server playing the oracle blueprint and the expert moves, send
    exactly the prompt ids the training data holds for the same level (planner, every executor turn,
    every flat turn)."""
    from himac_verl.agent.flat_loop import FlatAgentLoop
    from himac_verl.agent.himac_loop import HiMACAgentLoop
    from himac_verl.agent.testing import InProcessPool, ScriptedServer, base_config, make_loop, pool_factory
    from himac_verl.envs.sokoban.subgoals import BoardState, expert_move, parse_subgoal

    clean = _clean(spec)
    task = 5
    env = sa._make_env(clean)
    reset, level, plan = sa._level_plan(env, "train", task)
    goals = sa.oracle_subgoals(level, plan)
    rng = __import__("random").Random(0)
    want_exec = [e.prompt for e in sa.executor_episode(env, *sa._level_plan(env, "train", task), rng, clean)]
    want_flat = [e.prompt for e in sa.flat_episode(env, *sa._level_plan(env, "train", task)[:2], rng, clean)]
    want_plan = sa.planner_prompt(reset, clean)
    encoder = sa.PromptEncoder(tok)

    def board_state(text):
        from himac_verl.envs.sokoban.level import Level

        grid = re.search(r"\):\n(.*?)\nGive one move", text, re.DOTALL).group(1)
        lvl = Level.from_text(grid)
        return BoardState(lvl, next(iter(lvl.boxes)), lvl.player)

    def policy(call):
        text = call.prompt_text
        if "You are the planner" in text:
            return sa.plan_target(goals)
        state = board_state(text)
        if "You are the executor" in text:
            k = int(re.search(r"Active subgoal \((\d+) of", text).group(1)) - 1
            move = expert_move(state, parse_subgoal(goals[k]))
            from himac_verl.envs.sokoban.subgoals import completes

            return sa.action_target(move, completes(state, move, parse_subgoal(goals[k])))
        return sa.action_target(sa._solver_move(level, state))

    cfg = base_config(group_size=1, env_kwargs=clean.env_kwargs(),
                      agent={"max_env_steps": clean.max_env_steps, "subgoal_step_budget": clean.subgoal_step_budget,
                             "max_subgoals": clean.max_subgoals, "flat_history_turns": clean.flat_history_turns})
    cfg["actor_rollout_ref"]["rollout"].update(prompt_length=512, response_length=48)
    server = ScriptedServer(tok, policy)
    row = {"himac_env": "sokoban", "himac_split": "train", "himac_task_id": str(task), "himac_phase": "eval"}

    async def main():
        himac = make_loop(HiMACAgentLoop, tok, server, cfg)
        flat = make_loop(FlatAgentLoop, tok, server, cfg)
        return await himac.run({"temperature": 0.0}, **row), await flat.run({"temperature": 0.0}, **row)

    with pool_factory(InProcessPool(lambda: sa._make_env(clean))):
        himac_out, flat_out = asyncio.run(main())
    assert himac_out[0].extra_fields["won"] and flat_out[0].extra_fields["won"]
    roles = [o.extra_fields["role"] for o in himac_out]
    assert roles[0] == "planner" and himac_out[0].prompt_ids == encoder.builder_ids(want_plan)
    got_exec = [o.prompt_ids for o in himac_out if o.extra_fields["role"] == "executor"]
    assert len(got_exec) >= 2 and got_exec == [encoder.builder_ids(t) for t in want_exec]
    assert got_exec == encoder.encode(want_exec)  # the fast path used for training gives the same ids
    assert len(flat_out) >= 2 and [o.prompt_ids for o in flat_out] == [encoder.builder_ids(t) for t in want_flat]


def test_tiny_build_writes_a_loadable_cached_model(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    opts = dict(SMALL, steps=3, batch_size=8, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2,
                num_kv_heads=1, vocab_size=400)
    path = sa.build_sokoban_agent(tmp_path / "agent", levels=2, **opts)
    record = json.loads((tmp_path / "agent" / sa.MARKER).read_text())
    assert record["spec"] == sa.spec_json(sa.make_spec(**opts))
    metrics = record["metrics"]
    for key in ("parse_rate", "following_rate", "sub_done_precision", "sub_done_recall", "himac_success",
                "flat_success", "random_mover_success", "prompt_tokens", "generated_tokens_per_s"):
        assert key in metrics, key
    assert "parse rate" in sa.format_table(record)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    ids = torch.tensor([tok("######", add_special_tokens=False)["input_ids"]])
    assert model(input_ids=ids).logits.shape[-1] == len(tok)
    assert not list(tmp_path.glob("agent.building-*"))
    mtime = (tmp_path / "agent" / sa.MARKER).stat().st_mtime
    assert sa.build_sokoban_agent(tmp_path / "agent", levels=2, **opts) == path  # cached: not rebuilt
    assert (tmp_path / "agent" / sa.MARKER).stat().st_mtime == mtime


def test_main_preset_plays_the_levels_and_loop_settings_the_model_was_built_for():
    """The preset (himac_verl/config/preset/sokoban_learning.yaml) and the model's spec each state the levels
    and loop settings; the loops, as they resolve the preset, must see exactly the spec's (else the model
    plays levels or prompts it never saw)."""
    from conftest import compose_config

    from himac_verl.agent.config import LoopSettings

    config = compose_config(["mode=cpu", "+preset=sokoban_learning"])
    settings = LoopSettings.from_config(config, "sokoban")
    spec = sa.make_spec()
    assert config.himac.model == "sokoban_agent"
    assert {k: settings.env_kwargs[k] for k in spec.env_kwargs()} == spec.env_kwargs()
    assert (settings.max_env_steps, settings.subgoal_step_budget, settings.max_subgoals,
            settings.flat_history_turns) == (spec.max_env_steps, spec.subgoal_step_budget, spec.max_subgoals,
                                             spec.flat_history_turns)
