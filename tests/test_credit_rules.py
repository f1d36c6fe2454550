"""Credit rules that keep HiMAC from being gamed, on the REAL envs through the REAL HiMAC loop (in-process
pool, scripted server): no free ``<sub_done>`` turns, a parse failure scoring below every parsed plan, and
failed episodes out of every group (docs/credit.md).

Policies are scripted executors under a fixed two-subgoal blueprint:

- ``only_sub_done``: writes ``<sub_done>`` and nothing else every turn (today's exploit: such turns took
  no env step and cost nothing, so the episode ended at the turn cap with return 0.0 on Sokoban, above an
  honest failure's -1.5);
- ``alternating``: ``<sub_done>``, then an invalid action, then ``<sub_done>``...;
- ``always_invalid``: an action no env accepts.

Both gaming policies must get a return at most the always-invalid policy's, on every env.
"""

from __future__ import annotations

import asyncio
import itertools
import math

import numpy as np
import pytest
import torch

from himac_verl.advantage import AdvantageConfig, SampleFields, compute_advantage
from himac_verl.agent.config import LoopSettings, default_parse_failure_return
from himac_verl.agent.himac_loop import HiMACAgentLoop
from himac_verl.agent.testing import InProcessPool, LineEnv, ScriptedServer, base_config, make_loop, pool_factory
from himac_verl.envs import env_class, make_env
from himac_verl.envs.base import INVALID_ACTION_PENALTY, TaskSpec
from himac_verl.envs.sokoban.env import SokobanEnv
from himac_verl.models.tiny import build_tokenizer

SAMPLED = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "logprobs": True}
PLAN = "<plan>\n1. get ready\n2. finish the task\n</plan>"


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.fixture(scope="module", autouse=True)
def line_templates(tmp_path_factory):
    """Templates of the scripted LineEnv (``line``), which has no packaged ones."""
    root = tmp_path_factory.mktemp("templates")
    (root / "line").mkdir()
    (root / "line" / "planner.v2.txt").write_text("You are the planner|$instruction|$observation")
    (root / "line" / "executor.v2.txt").write_text("E|$blueprint|$subgoal_number:$subgoal|$moves|$observation")
    LINE["template_dir"] = str(root)


LINE: dict = {}


def _alfworld_task() -> str:
    from himac_verl.envs.alfworld.data import list_task_ids

    return list_task_ids("valid_seen")[0]


ENVS = {
    # env name -> (task split, task id factory, max_env_steps)
    "sokoban": ("train", lambda: "3", 8),
    "webshop": ("test", lambda: "0", 8),
    "alfworld": ("valid_seen", _alfworld_task, 8),
}


def play(tok, env_name: str, executor, *, max_env_steps: int, phase: str = "eval", group_size: int = 1,
         pool=None, planner=lambda call: PLAN, task_id: str | None = None, split: str | None = None,
         **agent) -> list:
    split_default, task_factory, _ = ENVS.get(env_name, ("train", lambda: "2", max_env_steps))
    if env_name == "line":
        agent.setdefault("template_dir", LINE["template_dir"])
    cfg = base_config(group_size=group_size,
                      agent={"max_env_steps": max_env_steps, "subgoal_step_budget": 3, **agent})
    turn = itertools.count()

    def policy(call):
        if "You are the planner" in call.prompt_text:
            return planner(call)
        return executor(next(turn), call)

    server = ScriptedServer(tok, policy)
    pool = pool or InProcessPool(lambda: make_env(env_name, max_steps=max_env_steps))
    row = {"himac_env": env_name, "himac_split": split or split_default,
           "himac_task_id": task_id or task_factory(), "himac_phase": phase, "global_steps": 1}

    async def main():
        loop = make_loop(HiMACAgentLoop, tok, server, cfg)
        with pool_factory(pool):
            return await loop.run(dict(SAMPLED), **row)

    return asyncio.run(main())


POLICIES = {
    "only_sub_done": lambda i, call: "<sub_done>",
    "alternating": lambda i, call: "<sub_done>" if i % 2 == 0 else "<action>fly to the moon</action>",
    "always_invalid": lambda i, call: "<action>fly to the moon</action>",
}


@pytest.mark.parametrize("env_name", sorted(ENVS))
def test_sub_done_turns_are_not_free(tok, env_name):
    steps = ENVS[env_name][2]
    returns = {}
    for name, executor in POLICIES.items():
        outs = play(tok, env_name, executor, max_env_steps=steps)
        planner = outs[0].extra_fields
        assert planner["role"] == "planner" and not planner["flags"]["parse_failure"]
        # every executor turn took one env step of the episode's budget
        assert planner["env_steps"] == steps == len(outs) - 1, name
        returns[name] = planner["episode_return"]
    per_step = SokobanEnv.worst_return(1, num_boxes=0) if env_name == "sokoban" else INVALID_ACTION_PENALTY
    assert returns["always_invalid"] == pytest.approx(steps * per_step)
    assert returns["only_sub_done"] <= returns["always_invalid"] + 1e-9
    assert returns["alternating"] <= returns["always_invalid"] + 1e-9


def test_sub_done_is_refused_before_a_step_on_the_subgoal_and_on_the_last_subgoal(tok):
    outs = play(tok, "line", lambda i, c: "<sub_done>", max_env_steps=5, pool=InProcessPool(lambda: LineEnv()))
    execs = [o.extra_fields for o in outs[1:]]
    # turn 1: no step on subgoal 1 yet -> refused (an invalid step); turn 2: advances (charged);
    # turns 3-5: last subgoal -> refused, each an invalid step
    assert [e["subgoal_index"] for e in execs] == [0, 0, 1, 1, 1]
    assert [e["flags"]["sub_done"] for e in execs] == [False, True, False, False, False]
    assert [e["flags"]["sub_done_refused"] for e in execs] == [True, False, True, True, True]
    assert all(e["flags"]["invalid_action"] for e in execs)
    assert [e["step_reward"] for e in execs] == pytest.approx([INVALID_ACTION_PENALTY] * 5)
    assert [e["penalty"] for e in execs] == pytest.approx([INVALID_ACTION_PENALTY] * 5)
    assert all(e["episode_penalty"] == pytest.approx(5 * INVALID_ACTION_PENALTY) for e in execs)


def test_an_action_with_sub_done_inside_the_action_block_is_the_action_alone(tok):
    outs = play(tok, "line", lambda i, c: "<action>right <sub_done></action>", max_env_steps=3,
                pool=InProcessPool(lambda: LineEnv()), task_id="2")
    execs = [o.extra_fields for o in outs[1:]]
    assert [e["flags"]["invalid_action"] for e in execs] == [False, False]  # "right" is the action
    assert [e["subgoal_index"] for e in execs] == [0, 0]  # the tag inside <action> declares nothing
    assert outs[0].extra_fields["won"]


# ---- the parse-failure return is strictly below every parsed plan's -------------------------------------

def _sokoban_min_return(task_id: str, steps: int) -> float:
    """Exhaustive minimum over every sequence of ``steps`` moves or invalid outputs."""
    env = SokobanEnv(max_steps=steps)
    best = math.inf
    for actions in itertools.product(("up", "down", "left", "right", "xx"), repeat=steps):
        env.reset(TaskSpec("sokoban", "train", task_id))
        total = 0.0
        for a in actions:
            r = env.step(a)
            total += r.reward
            if r.done:
                break
        best = min(best, total)
    return best


def test_sokoban_worst_return_bounds_every_episode():
    for task_id in ("3", "7", "11"):
        for steps in (3, 5):
            found = _sokoban_min_return(task_id, steps)
            assert SokobanEnv.worst_return(steps) <= found + 1e-9, (task_id, steps, found)
    # a box that starts on its target (2-box levels can) is the case the -num_boxes term covers
    assert SokobanEnv.worst_return(15) == pytest.approx(15 * -0.2 - 1.0)


@pytest.mark.parametrize("env_name", ["sokoban", "alfworld", "webshop", "bandit"])
def test_default_parse_failure_return_is_strictly_below_the_worst_parsed_return(env_name):
    steps = {"sokoban": 15, "alfworld": 50, "webshop": 15, "bandit": 1}[env_name]
    default = LoopSettings.from_config({"himac": {}}, env_name).parse_failure_return
    worst = env_class(env_name).worst_return(steps)
    assert default == pytest.approx(default_parse_failure_return(env_name, steps)) and default < worst
    # the old default (an all-invalid episode) tied with an unsolved Sokoban episode (-1.5)
    assert default < steps * INVALID_ACTION_PENALTY


@pytest.mark.parametrize("env_name", sorted(ENVS))
def test_random_policies_never_reach_below_the_worst_return(tok, env_name):
    steps = ENVS[env_name][2]
    worst = env_class(env_name).worst_return(steps)
    rng = np.random.default_rng(0)
    words = ["up", "down", "left", "right", "look", "search[shoes]", "click[buy now]", "go to desk 1", "junk"]
    for _ in range(3):
        seq = rng.choice(words, size=steps)
        outs = play(tok, env_name, lambda i, c, seq=seq: f"<action>{seq[i % steps]}</action>", max_env_steps=steps)
        assert outs[0].extra_fields["episode_return"] >= worst - 1e-9
        assert outs[0].extra_fields["episode_return"] > LoopSettings.from_config(
            {"himac": {"agent": {"max_env_steps": steps}}}, env_name).parse_failure_return


# ---- failed episodes never get credit -------------------------------------------------------------------

class CrashOnce(LineEnv):
    """A LineEnv whose instances crash at their second step while ``crashes`` lasts (a shared budget)."""

    crashes = 0

    def step(self, action):
        if self.steps == 1 and CrashOnce.crashes > 0:
            CrashOnce.crashes -= 1
            raise RuntimeError("worker died")
        return super().step(action)


def test_a_crashed_episode_gets_no_credit_through_the_loop(tok):
    """Micro pass of 4 executions under the best blueprint; one env crashes at its second step. Before, the
    crashed episode's return (the rewards so far) entered the group like any other, and could earn the
    best advantage (+0.866 measured with the real pool); now it gets 0 and the healthy episodes are
    normalised among themselves, exactly as if the crashed one had never run."""
    turns: dict[str, int] = {}

    def executor(i, call):
        """micro0 crashes its env at its second turn (LineEnv raises on "crash"); micro1 is always invalid
        (-0.4); micro2 and micro3 walk (0.0). The greedy scoring episodes walk too."""
        episode = call.request_id.rsplit("/", 1)[-1]
        turns[episode] = turns.get(episode, 0) + 1
        if episode == "micro0" and turns[episode] == 2:
            return "<action>crash</action>"
        return "<action>xx</action>" if episode in ("micro0", "micro1") else "<action>left</action>"

    outs = play(tok, "line", executor, max_env_steps=4, phase="micro", group_size=4,
                pool=InProcessPool(lambda: LineEnv()), task_id="9")
    extra = [o.extra_fields for o in outs]
    micro = [e for e in extra if e["pass"] == "micro"]
    assert len({e["episode_uid"] for e in micro if e["failed"]}) == 1
    assert all(e["flags"]["env_failure"] for e in micro if e["failed"])
    healthy = [e for e in extra if not e["failed"]]
    for stats in ("turn", "episode"):
        config = AdvantageConfig(stats=stats)
        adv, _ = compute_advantage("himac", SampleFields.from_extra_fields(extra), torch.ones(len(extra), 3), config)
        alone, _ = compute_advantage("himac", SampleFields.from_extra_fields(healthy),
                                     torch.ones(len(healthy), 3), config)
        got = [float(adv[i, 0]) for i, e in enumerate(extra) if not e["failed"]]
        assert got == pytest.approx([float(a) for a in alone[:, 0]])
        assert all(float(adv[i, 0]) == 0.0 for i, e in enumerate(extra) if e["failed"])
        assert any(abs(a) > 0.1 for a in got)  # the healthy episodes' returns differ


def test_a_failed_planner_gets_no_macro_credit(tok):
    """A blueprint whose greedy scoring episode crashed scores nothing: its planner sample gets 0."""
    CrashOnce.crashes = 1
    outs = play(tok, "line", lambda i, c: "<action>left</action>", max_env_steps=4, phase="macro", group_size=3,
                pool=InProcessPool(CrashOnce), task_id="9")
    extra = [o.extra_fields for o in outs]
    planners = [e for e in extra if e["role"] == "planner"]
    assert sum(e["failed"] for e in planners) == 1
    adv, _ = compute_advantage("himac", SampleFields.from_extra_fields(extra), torch.ones(len(extra), 2),
                               AdvantageConfig())
    for i, e in enumerate(extra):
        if e["failed"]:
            assert adv[i, 0] == 0.0
