"""Packaged prompt templates (every env x role renders through the real loops) and loop settings."""

import asyncio

import pytest
from omegaconf import OmegaConf

from himac_verl.agent.config import LoopSettings
from himac_verl.agent.flat_loop import FlatAgentLoop
from himac_verl.agent.himac_loop import HiMACAgentLoop
from himac_verl.agent.prompts import ROLES, HistoryEntry, format_admissible, format_history, load_template
from himac_verl.agent.testing import InProcessPool, LineEnv, ScriptedServer, base_config, make_loop, pool_factory
from himac_verl.models.tiny import build_tokenizer

ENVS = ("sokoban", "alfworld", "webshop")
EXECUTOR = {"instruction", "blueprint", "subgoal_number", "num_subgoals", "subgoal", "history", "history_count",
            "moves", "observation", "admissible", "step", "max_steps", "legend"}
ALLOWED = {
    "planner": {"instruction", "observation", "admissible", "max_subgoals", "max_steps", "step", "legend"},
    "executor": EXECUTOR,
    "executor_fixed": EXECUTOR,
    "flat": {"instruction", "history", "history_count", "moves", "observation", "admissible", "step", "max_steps",
             "legend"},
}
PACKAGED = [(env, role, version) for env in ENVS for version in ("v1", "v2") for role in ROLES
            if not (version == "v1" and role == "executor_fixed")]


@pytest.mark.parametrize("env, role, version", PACKAGED)
def test_packaged_templates_use_known_placeholders(env, role, version):
    template = load_template(env, role, version)
    assert template.is_valid()
    used = set(template.get_identifiers())
    assert used <= ALLOWED[role], used - ALLOWED[role]
    assert {"instruction", "observation"} <= used
    assert ("<plan>" in template.template) == (role == "planner")
    assert ("<action>" in template.template) == (role != "planner")
    # the fixed-step ablation's executor is never told about the tag; v2 says where it goes
    assert ("<sub_done>" in template.template) == (role == "executor")
    if version == "v2" and role == "executor":
        assert "<sub_done> right after </action>" in template.template


def test_missing_templates_are_named():
    with pytest.raises(FileNotFoundError, match="env='chess'"):
        load_template("chess", "planner", "v1")
    with pytest.raises(FileNotFoundError, match="template_version='v9'"):
        load_template("sokoban", "planner", "v9")
    with pytest.raises(ValueError, match="role must be one of"):
        load_template("sokoban", "critic", "v1")


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.mark.parametrize("env", ENVS)
def test_packaged_templates_render_through_both_loops(tok, env):
    """Each env's real templates, filled by the real loops (LineEnv plays the env)."""
    def policy(call):
        if "<plan>" in call.prompt_text and "Active subgoal" not in call.prompt_text:
            return "<plan>\n1. go right\n</plan>"
        return "<think>right</think><action>right</action>"

    cfg = base_config(agent={"max_env_steps": 3})
    server = ScriptedServer(tok, policy)

    async def main():
        with pool_factory(InProcessPool(lambda: LineEnv(admissible=True))):
            out = []
            for cls in (HiMACAgentLoop, FlatAgentLoop):
                loop = make_loop(cls, tok, server, cfg)
                out.append(await loop.run({"temperature": 1.0, "logprobs": True}, himac_env=env, himac_split="x",
                                          himac_task_id="1", himac_phase="eval", global_steps=0))
            return out

    himac, flat = asyncio.run(main())
    assert [o.extra_fields["role"] for o in himac] == ["planner", "executor"]
    assert [o.extra_fields["role"] for o in flat] == ["flat"]
    assert himac[-1].extra_fields["won"] and flat[-1].extra_fields["won"]
    planner_text, executor_text, flat_text = (c.prompt_text for c in server.calls)
    for role, text in zip(("planner", "executor", "flat"), (planner_text, executor_text, flat_text)):
        assert "reach 1" in text and "pos=0" in text and "$" not in text
        if "admissible" in load_template(env, role).get_identifiers():
            assert "Admissible actions: 'left', 'right'" in text
    assert "Active subgoal (1 of 1): go right" in executor_text and "1. go right" in executor_text
    assert "1 to 6" in planner_text


def test_history_and_admissible_formatting():
    assert format_history([], 1) == "(none yet)"
    assert format_history([HistoryEntry("a\n", "up"), HistoryEntry("b", "down")], 4) == (
        "[Step 4] Observation: a\n[Step 4] Action: up\n[Step 5] Observation: b\n[Step 5] Action: down")
    assert format_admissible(None) == "" and format_admissible([]) == ""
    many = format_admissible([f"go {i}" for i in range(110)])
    assert many.endswith("'go 99' (and 10 more)")


def test_settings_defaults_per_env_and_overrides():
    s = LoopSettings.from_config(OmegaConf.create({"himac": {}}), "alfworld")
    assert (s.max_env_steps, s.subgoal_step_budget, s.group_size, s.default_phase) == (50, 10, 8, "joint")
    # below the worst parsed return (50 invalid steps, -5.0) by the margin
    assert s.parse_failure_return == pytest.approx(-6.0)
    s = LoopSettings.from_config({"himac": {"group_size": 4, "agent": {"subgoal_step_budget": 3,
                                                                       "use_sub_done": False}},
                                  "actor_rollout_ref": {"rollout": {"prompt_length": 4096, "response_length": 512}}},
                                 "webshop")
    assert (s.max_env_steps, s.subgoal_step_budget, s.group_size, s.use_sub_done) == (15, 3, 4, False)
    assert (s.prompt_length, s.response_length, s.parse_failure_return) == (4096, 512, pytest.approx(-2.5))
    assert LoopSettings.from_config({}, "sokoban").subgoal_step_budget == 4


def test_settings_errors_name_the_key():
    with pytest.raises(ValueError, match="himac.agent.max_env_steps"):
        LoopSettings.from_config({}, "chess")
    with pytest.raises(ValueError, match="himac.group_size=0"):
        LoopSettings.from_config({"himac": {"group_size": 0}}, "sokoban")
    with pytest.raises(ValueError, match="blueprint_selection='worst'"):
        LoopSettings.from_config({"himac": {"agent": {"blueprint_selection": "worst"}}}, "sokoban")
    with pytest.raises(ValueError, match="himac.phase='warmup'"):
        LoopSettings.from_config({"himac": {"phase": "warmup"}}, "sokoban")
