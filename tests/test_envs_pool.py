"""The env pool: concurrency equals sequential play, crash/hang/raise recovery, release, shutdown.

``ScriptedEnv`` (below) is imported by the worker processes from this module: it counts steps and
misbehaves on command ("exit" -> os._exit, "segv" -> segfault, "hang"/"slow" -> sleep, "raise").
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import subprocess
import sys
import time

import psutil
import pytest

from himac_verl.envs import ENV_CLASSES, TaskSpec, make_env
from himac_verl.envs.base import AgentEnv, Observation, ResetResult, StepResult
from himac_verl.envs.pool import EnvFailure, EnvPool, get_env_pool

SCRIPTED = f"{__name__}:ScriptedEnv"
_HOARD: list[bytes] = []


class ScriptedEnv(AgentEnv):
    name = "scripted"
    max_steps = 100

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale
        self.seed = None

    def reset(self, task: TaskSpec) -> ResetResult:
        self.seed, self.n = int(task.task_id), 0
        obs = Observation(text=f"start {self.seed}", anchor=f"{self.seed}:0")
        info = {"pid": os.getpid(), "env_id": id(self), "torch_loaded": "torch" in sys.modules,
                "rss_mb": psutil.Process().memory_info().rss / 2**20}
        return ResetResult(obs, "count", "scripted", info)

    def step(self, action: str) -> StepResult:
        if action == "exit":
            os._exit(3)
        if action == "segv":
            ctypes.string_at(0)
        if action == "hang":
            time.sleep(60)
        if action == "slow":
            time.sleep(1.0)
        if action == "raise":
            raise ValueError("scripted failure on purpose")
        if action == "grow":
            _HOARD.append(b"x" * (150 << 20))  # 150 MB, written so it is resident
        self.n += 1
        obs = Observation(text=f"{self.seed}:{self.n}:{action}", anchor=f"{self.seed}:{self.n}")
        return StepResult(obs, self.scale * (self.seed + self.n), self.n >= 5, False, True, action,
                          info={"pid": os.getpid()})


def run(coro):
    return asyncio.run(coro)


def gone(pid: int, wait_s: float = 5.0) -> bool:
    """The process has exited AND been reaped (a zombie is not gone: the pool must wait() for its workers)."""
    deadline = time.monotonic() + wait_s
    while psutil.pid_exists(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not psutil.pid_exists(pid)


def zombie_children() -> list[int]:
    """Children of this process that exited but were never reaped."""
    out = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                out.append(child.pid)
        except psutil.NoSuchProcess:
            pass
    return out


def test_concurrent_sokoban_sessions_equal_sequential_play():
    actions = ["up", "left", "down", "right", "left", "up", "bogus", "down", "right", "up", "left", "down"]

    def plan(seed: int) -> list[str]:
        return actions[seed % 5:] + actions[:seed % 5]

    def sequential(seed: int):
        env = make_env("sokoban")
        out = [env.reset(TaskSpec("sokoban", "train", str(seed))).observation.text]
        for a in plan(seed):
            s = env.step(a)
            out.append((s.observation.text, round(s.reward, 6), s.done, s.won, s.is_action_valid))
            if s.done:
                break
        return out

    async def episode(pool: EnvPool, seed: int):
        async with pool.session() as env:
            out = [(await env.reset(TaskSpec("sokoban", "train", str(seed)))).observation.text]
            for a in plan(seed):
                s = await env.step(a)
                out.append((s.observation.text, round(s.reward, 6), s.done, s.won, s.is_action_valid))
                await asyncio.sleep(0)  # let the other episodes interleave
                if s.done:
                    break
            return env.worker_index, out

    async def main():
        pool = EnvPool("sokoban", num_workers=2)
        try:
            return await asyncio.gather(*[episode(pool, seed) for seed in range(8)])
        finally:
            await pool.aclose()

    results = run(main())
    assert {w for w, _ in results} == {0, 1}  # 8 sessions multiplexed on 2 processes
    for seed, (_, trajectory) in enumerate(results):
        assert trajectory == sequential(seed)


def test_sessions_are_multiplexed_and_instances_reused():
    async def main():
        pool = EnvPool(SCRIPTED, num_workers=1)
        try:
            a, b = pool.session(), pool.session()
            ra = await a.reset(TaskSpec("scripted", "t", "1"))
            rb = await b.reset(TaskSpec("scripted", "t", "2"))
            sa, sb = await asyncio.gather(a.step("x"), b.step("y"))
            a.close()
            async with pool.session() as c:  # gets a's released instance
                rc = await c.reset(TaskSpec("scripted", "t", "3"))
            b.close()
            return ra, rb, sa, sb, rc
        finally:
            await pool.aclose()

    ra, rb, sa, sb, rc = run(main())
    assert ra.info["pid"] == rb.info["pid"] and ra.info["env_id"] != rb.info["env_id"]
    assert (sa.observation.text, sa.reward) == ("1:1:x", 2.0)
    assert (sb.observation.text, sb.reward) == ("2:1:y", 3.0)
    assert rc.info["env_id"] == ra.info["env_id"]
    assert ra.info["torch_loaded"] is False  # workers are fresh, torch-free interpreters


def test_registered_name_and_env_kwargs_reach_the_worker(monkeypatch):
    monkeypatch.setitem(ENV_CLASSES, "scripted_test", SCRIPTED)

    async def main():
        pool = EnvPool("scripted_test", {"scale": 10.0}, num_workers=1)
        try:
            async with pool.session() as env:
                await env.reset(TaskSpec("scripted", "t", "2"))
                return await env.step("a")
        finally:
            await pool.aclose()

    assert run(main()).reward == 30.0


@pytest.mark.parametrize("action, code", [("exit", 3), ("segv", -11)])
def test_crash_fails_every_session_of_that_process_and_the_replacement_serves_new_ones(action, code):
    async def main():
        pool = EnvPool(SCRIPTED, num_workers=1)
        try:
            victim, neighbour = pool.session(), pool.session()
            first = await victim.reset(TaskSpec("scripted", "t", "1"))
            await neighbour.reset(TaskSpec("scripted", "t", "2"))
            old_pid = first.info["pid"]
            with pytest.raises(EnvFailure) as crash:
                await victim.step(action)
            with pytest.raises(EnvFailure) as again:
                await victim.step("x")
            with pytest.raises(EnvFailure) as other:
                await neighbour.step("x")
            victim.close()
            neighbour.close()
            async with pool.session() as fresh:
                reset = await fresh.reset(TaskSpec("scripted", "t", "4"))
                step = await fresh.step("x")
            return crash.value, again.value, other.value, old_pid, reset, step, pool.num_restarts
        finally:
            await pool.aclose()

    crash, again, other, old_pid, reset, step, restarts = run(main())
    assert crash.kind == "crash" and f"exit code {code}" in crash.detail
    assert again.kind == "crash" and "already failed" in again.detail
    assert other.kind == "crash" and "replaced" in other.detail
    assert reset.info["pid"] != old_pid and gone(old_pid)
    assert step.reward == 5.0 and restarts == 1


def test_hang_times_out_kills_the_process_and_spares_the_other_worker():
    async def main():
        pool = EnvPool(SCRIPTED, num_workers=2, step_timeout_s=0.5)
        try:
            hung, healthy = pool.session(), pool.session()
            assert hung.worker_index != healthy.worker_index
            r = await hung.reset(TaskSpec("scripted", "t", "1"))
            await healthy.reset(TaskSpec("scripted", "t", "2"))
            start = time.monotonic()
            outcome = await asyncio.gather(hung.step("hang"), healthy.step("a"), return_exceptions=True)
            waited = time.monotonic() - start
            later = await healthy.step("b")
            hung.close()
            healthy.close()
            return r.info["pid"], outcome, waited, later
        finally:
            await pool.aclose()

    pid, (failure, ok), waited, later = run(main())
    assert isinstance(failure, EnvFailure) and failure.kind == "timeout" and "0.5 s" in failure.detail
    assert waited < 30  # killed at the timeout, not after the 60 s sleep
    assert gone(pid)
    assert (ok.observation.text, later.observation.text) == ("2:1:a", "2:2:b")


def test_an_env_that_raises_fails_its_session_only():
    async def main():
        pool = EnvPool(SCRIPTED, num_workers=1)
        try:
            bad, good = pool.session(), pool.session()
            r = await bad.reset(TaskSpec("scripted", "t", "1"))
            await good.reset(TaskSpec("scripted", "t", "2"))
            with pytest.raises(EnvFailure) as raised:
                await bad.step("raise")
            with pytest.raises(EnvFailure):
                await bad.reset(TaskSpec("scripted", "t", "1"))
            step = await good.step("a")
            bad.close()
            good.close()
            return r.info["pid"], raised.value, step, pool.num_restarts
        finally:
            await pool.aclose()

    pid, failure, step, restarts = run(main())
    assert failure.kind == "error" and "ValueError: scripted failure on purpose" in failure.detail
    assert step.info["pid"] == pid and step.reward == 3.0 and restarts == 0


def test_bad_env_options_raise_value_error_to_the_caller():
    async def main():
        pool = EnvPool("sokoban", {"observation": "smell"}, num_workers=1)
        try:
            async with pool.session() as env:
                with pytest.raises(ValueError, match="observation must be one of .*'smell'"):
                    await env.reset(TaskSpec("sokoban", "train", "0"))
        finally:
            await pool.aclose()

    run(main())


def test_a_bad_task_raises_value_error_and_the_session_goes_on():
    async def main():
        pool = EnvPool("sokoban", num_workers=1)
        try:
            async with pool.session() as env:
                with pytest.raises(ValueError, match="task_id must be a decimal int.*'x'"):
                    await env.reset(TaskSpec("sokoban", "train", "x"))
                first = await env.reset(TaskSpec("sokoban", "train", "0"))
                step = await env.step("up")
            return first, step, pool.num_restarts
        finally:
            await pool.aclose()

    first, step, restarts = run(main())
    assert first.observation.text == make_env("sokoban").reset(TaskSpec("sokoban", "train", "0")).observation.text
    assert step.is_action_valid and restarts == 0


def test_release_on_exception_and_on_cancellation():
    async def main():
        pool = EnvPool(SCRIPTED, num_workers=1)
        try:
            with pytest.raises(KeyError):
                async with pool.session() as env:
                    first = await env.reset(TaskSpec("scripted", "t", "1"))
                    raise KeyError("loop bug")

            async def slow_episode():
                async with pool.session() as env:
                    await env.reset(TaskSpec("scripted", "t", "2"))
                    await env.step("slow")

            task = asyncio.create_task(slow_episode())
            await asyncio.sleep(0.3)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            async with pool.session() as env:
                again = await env.reset(TaskSpec("scripted", "t", "3"))
            return first, again, pool._workers[0].open_sessions
        finally:
            await pool.aclose()

    first, again, open_sessions = run(main())
    assert again.info["env_id"] == first.info["env_id"]  # one instance served all three sessions
    assert open_sessions == 0


def test_a_worker_over_the_memory_limit_is_recycled_once_idle():
    async def main():
        pool = EnvPool(SCRIPTED, num_workers=2, max_worker_rss_mb=None)
        try:
            grower, other = pool.session(), pool.session()
            first = await grower.reset(TaskSpec("scripted", "t", "1"))
            await other.reset(TaskSpec("scripted", "t", "2"))
            pool.max_worker_rss_mb = first.info["rss_mb"] + 100
            grown = await grower.step("grow")  # the answer reports > limit: worker 0 drains
            newcomer = pool.session()  # would tie on load and pick worker 0; draining sends it to 1
            still = await grower.step("x")  # a draining worker still serves its sessions
            grower.close()  # its last session is gone: replaced, nobody fails
            for _ in range(200):  # the release is handled by the dispatcher thread
                if pool.num_recycles:
                    break
                await asyncio.sleep(0.05)
            async with pool.session() as fresh:  # worker 0 is the least loaded again
                assert fresh.worker_index == 0
                again = await fresh.reset(TaskSpec("scripted", "t", "3"))
            newcomer.close()
            other.close()
            return first, grown, newcomer.worker_index, still, again, pool.num_recycles, pool.num_restarts
        finally:
            await pool.aclose()

    first, grown, newcomer_worker, still, again, recycles, restarts = run(main())
    assert grower_ok(grown) and grower_ok(still) and newcomer_worker == 1
    assert again.info["pid"] != first.info["pid"] and gone(first.info["pid"])
    assert (recycles, restarts) == (1, 0)


def grower_ok(step: StepResult) -> bool:
    return step.is_action_valid and step.observation.text.startswith("1:")


def test_shutdown_leaves_no_processes_and_rejects_new_work():
    async def main():
        pool = EnvPool(SCRIPTED, num_workers=2)
        sessions = [pool.session() for _ in range(4)]
        resets = await asyncio.gather(*[s.reset(TaskSpec("scripted", "t", str(i))) for i, s in enumerate(sessions)])
        await pool.aclose()
        with pytest.raises(EnvFailure) as after:
            await sessions[0].step("x")
        with pytest.raises(RuntimeError):
            pool.session()
        return {r.info["pid"] for r in resets}, after.value

    pids, after = run(main())
    assert len(pids) == 2 and all(gone(pid) for pid in pids)
    children = {c.pid for c in psutil.Process().children(recursive=True)}
    assert not pids & children and not zombie_children(), (pids & children, zombie_children())
    assert after.kind == "error" and "closed" in after.detail


def test_get_env_pool_is_a_per_process_singleton():
    a = get_env_pool("sokoban", {"num_boxes": 1}, num_workers=1)
    try:
        assert get_env_pool("sokoban", {"num_boxes": 1}) is a
        assert get_env_pool("sokoban", {"num_boxes": 1}, num_workers=1) is a
        with pytest.raises(ValueError, match="num_workers=1.*num_workers=3"):
            get_env_pool("sokoban", {"num_boxes": 1}, num_workers=3)
        b = get_env_pool("sokoban", {"num_boxes": 2}, num_workers=1)
        assert b is not a
        b.close()
    finally:
        a.close()
    c = get_env_pool("sokoban", {"num_boxes": 1}, num_workers=1)
    assert c is not a
    c.close()


def test_bad_pool_arguments_are_named():
    with pytest.raises(ValueError, match="'nope'"):
        EnvPool("nope")
    with pytest.raises(ValueError, match="num_workers"):
        EnvPool("sokoban", num_workers=0)
    with pytest.raises(ValueError, match="step_timeout_s"):
        EnvPool("sokoban", step_timeout_s=-1)
    with pytest.raises(ValueError, match="max_worker_rss_mb"):
        EnvPool("sokoban", max_worker_rss_mb=0)

    async def step_first():
        pool = EnvPool("sokoban", num_workers=1)
        try:
            with pytest.raises(RuntimeError, match="before reset"):
                await pool.session().step("up")
            with pytest.raises(TypeError, match="TaskSpec"):
                await pool.session().reset("sokoban/train/0")
        finally:
            await pool.aclose()

    run(step_first())


def test_worker_module_imports_without_torch():
    code = "import sys, himac_verl.envs.pool, himac_verl.envs.sokoban; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
