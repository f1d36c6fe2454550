"""Env instances in worker processes, awaitable from asyncio, with per-call timeouts and restarts.

Why processes: ALFWorld/TextWorld steps are CPU bound (50 ms) and not thread safe, and a crashing C
extension (fast-downward) must not take the trainer down. Why several sessions per process: a group of
8-16 concurrent episodes then needs only a couple of processes (each ALFWorld instance is cheap once its
process has imported TextWorld).

Layout::

    asyncio task --EnvSession.step--> queue --dispatcher thread (one per worker)--socket--> worker process
                 <--concurrent Future---------------------------------------------------   {session id: env}

* A worker process runs ``python -m himac_verl.envs.pool`` (a fresh interpreter: it imports neither
  torch nor the caller's ``__main__``), builds envs with the ``make_env`` target, one per session, and
  answers requests one at a time. A released session's env goes to a free list and serves the next
  session (ALFWorld loads the next game into it rather than building a new TextWorld env, which leaks).
* Each worker has one dispatcher thread in the calling process. It sends one request at a time and waits
  for the answer with the call's timeout, so the timeout measures the env's own work, never the queue.
* Failures (:class:`EnvFailure`): the env raised -> ``"error"``, that env is dropped, the process lives on;
  the process died (``os._exit``, segfault, OOM kill) -> ``"crash"``; no answer within the timeout ->
  ``"timeout"`` and the process is killed. A dead or killed process is replaced by a new one (a new
  *generation*); every session that lived on the old one gets ``EnvFailure("crash")`` on its next call,
  new sessions use the new process. Other workers, and so the rest of the batch, are not affected.
* A session that got an ``EnvFailure`` stays failed (its episode must end with a flagged outcome); open a
  new session for the next episode.
* Memory: TextWorld grows by about 1.4 MB per ALFWorld game loaded and never gives it back, so every
  answer carries the worker's resident memory; a worker above ``max_worker_rss_mb`` takes no new sessions
  and, once its last session is released, is replaced by a fresh process (a *recycle*: nobody fails).
* Bad input is not a failure: a ``ValueError`` from an env's constructor or ``reset`` (an unknown task id,
  a bad option) is raised to the caller as ``ValueError`` with the env's message, and the session stays
  usable. It is the caller's error and must not be retried as if the env had crashed.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures as cf
import itertools
import json
import math
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import traceback
import weakref
from multiprocessing.connection import Connection
from typing import Any

from himac_verl.envs.base import ResetResult, StepResult, TaskSpec

FAILURE_KINDS = ("crash", "timeout", "error")
_SHUTDOWN_GRACE_S = 5.0


class EnvFailure(RuntimeError):
    """An env instance crashed, hung past its timeout, or raised.

    ``kind`` is one of ``"crash"``, ``"timeout"``, ``"error"``; ``detail`` says what happened (for
    ``"error"`` the env's traceback). The pool has already replaced the instance; the episode that got
    this must end with a flagged outcome (the loop's job), the rest of the batch goes on.
    """

    def __init__(self, kind: str, detail: str) -> None:
        if kind not in FAILURE_KINDS:
            raise ValueError(f"EnvFailure kind must be one of {FAILURE_KINDS}, got {kind!r}")
        super().__init__(f"env {kind}: {detail}")
        self.kind = kind
        self.detail = detail

    def __reduce__(self):
        return (EnvFailure, (self.kind, self.detail))


def resolve_env_target(env_name: str) -> str:
    """``"module:Class"`` for an env name of ``ENV_CLASSES`` (read now, in the caller, so that test envs
    registered at run time reach the worker), or ``env_name`` itself when it is already a dotted path."""
    from himac_verl.envs import ENV_CLASSES

    if env_name in ENV_CLASSES:
        return ENV_CLASSES[env_name]
    if ":" in env_name:
        return env_name
    raise ValueError(f"env_name {env_name!r} is not one of {sorted(ENV_CLASSES)} nor a 'module:Class' path")


# ---------------------------------------------------------------------------------------------------------
# The calling process: sessions, dispatcher threads, the pool.


class _Request:
    __slots__ = ("op", "sid", "payload", "timeout", "future")

    def __init__(self, op: str, sid: int, payload: Any, timeout: float, future: cf.Future | None) -> None:
        self.op, self.sid, self.payload, self.timeout, self.future = op, sid, payload, timeout, future


_STOP = object()


def _deliver(future: cf.Future | None, result: Any = None, error: BaseException | None = None) -> None:
    if future is None or future.done():
        return
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except cf.InvalidStateError:  # cancelled meanwhile
        pass


class _Worker:
    """One worker process and the thread that talks to it. Session bookkeeping lives in that thread."""

    def __init__(self, pool: EnvPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.generation = 0
        self.restarts = 0
        self.proc: subprocess.Popen | None = None
        self.conn: Connection | None = None
        self.bound: dict[int, int] = {}  # session id -> generation of the process holding its env
        self.failed: dict[int, EnvFailure] = {}  # session id -> the failure that ended it
        self.open_sessions = 0  # guarded by pool._lock; for load balancing
        self.rss_bytes = 0  # the process's resident memory at its last answer
        self.draining = False  # over the memory limit: no new sessions, replaced once idle
        self.recycles = 0
        self.thread = threading.Thread(target=self._run, name=f"envpool-{pool.env_name}-{index}", daemon=True)
        self.thread.start()

    # -- process management (dispatcher thread only, except kill_now) --

    def _start(self) -> None:
        parent_sock, child_sock = socket.socketpair()
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join([root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "himac_verl.envs.pool", str(child_sock.fileno())],
                pass_fds=(child_sock.fileno(),), env=env, stdin=subprocess.DEVNULL,
            )
        finally:
            child_sock.close()
        self.conn = Connection(parent_sock.detach())
        self.conn.send(("init", {"target": self.pool.target, "kwargs": self.pool.env_kwargs,
                                 "sys_path": list(sys.path)}))

    def _alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _retire(self, kill: bool) -> None:
        """Forget the current process (killing it if asked); sessions bound to it fail on next use."""
        if self.proc is not None:
            if kill and self.proc.poll() is None:
                self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not time out
                pass
        if self.conn is not None:
            self.conn.close()
        self.proc = self.conn = None
        self.generation += 1
        self.restarts += 1

    def _stop_process(self) -> None:
        if self.proc is None:
            return
        try:
            self.conn.send(("shutdown",))
            self.proc.wait(timeout=_SHUTDOWN_GRACE_S)
        except (OSError, EOFError, subprocess.TimeoutExpired):
            pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.conn.close()
        self.proc = self.conn = None

    def kill_now(self) -> None:
        """Interpreter exit: do not wait for the thread."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()

    # -- the dispatcher --

    def _run(self) -> None:
        while True:
            req = self.queue.get()
            if req is _STOP:
                self._stop_process()
                self._drain("the env pool was closed")
                return
            try:
                self._serve(req)
                self._maybe_recycle()
            except BaseException:  # noqa: BLE001 - a dispatcher bug must not hang the caller
                _deliver(req.future, error=EnvFailure("error", "env pool dispatcher: " + traceback.format_exc()))

    def _maybe_recycle(self) -> None:
        """Replace a process over the memory limit once no session lives on it (nobody fails)."""
        if not self.draining or self.proc is None:
            return
        if any(gen == self.generation for gen in self.bound.values()):
            return
        self._stop_process()
        self.generation += 1
        self.recycles += 1
        self.draining = False
        self.rss_bytes = 0

    def _drain(self, why: str) -> None:
        while True:
            try:
                req = self.queue.get_nowait()
            except queue.Empty:
                return
            if req is not _STOP:
                _deliver(req.future, error=EnvFailure("error", why))

    def _serve(self, req: _Request) -> None:
        if self.proc is not None and not self._alive():  # died while idle (OOM killer, external kill)
            self._retire(kill=False)
        if req.op == "release":
            self.failed.pop(req.sid, None)
            gen = self.bound.pop(req.sid, None)
            if gen is not None and gen == self.generation and self._alive():
                self._call(req)  # returns the env to the worker's free list
            return
        if req.future is not None and not req.future.set_running_or_notify_cancel():
            return  # the caller gave up before we started
        if req.sid in self.failed:
            earlier = self.failed[req.sid]
            _deliver(req.future, error=EnvFailure(earlier.kind, f"this session already failed: {earlier.detail}"))
            return
        gen = self.bound.get(req.sid)
        if gen is not None and gen != self.generation:
            self._fail(req, EnvFailure("crash", f"the env process of this session (worker {self.index}) died or "
                                                "was killed for another session's fault and has been replaced"))
            return
        if self.proc is None:
            self._start()
        self.bound[req.sid] = self.generation
        self._call(req)

    def _fail(self, req: _Request, failure: EnvFailure) -> None:
        if req.op != "release":
            self.failed[req.sid] = failure
        _deliver(req.future, error=failure)

    def _call(self, req: _Request) -> None:
        try:
            self.conn.send((req.op, req.sid, req.payload))
            ready = self.conn.poll(req.timeout)
            reply = self.conn.recv() if ready else None
        except (EOFError, OSError) as exc:
            try:
                code = self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # closed its end but did not exit: finish it
                code = "none, killed"
            self._retire(kill=True)
            self._fail(req, EnvFailure("crash", f"env worker process {self.index} died during {req.op} "
                                                f"(exit code {code}, {type(exc).__name__})"))
            return
        if reply is None:
            self._retire(kill=True)
            self._fail(req, EnvFailure("timeout", f"{req.op} took longer than {req.timeout:g} s; env worker process "
                                                  f"{self.index} was killed and is replaced"))
            return
        status, value, self.rss_bytes = reply
        limit = self.pool.max_worker_rss_mb
        self.draining = limit is not None and self.rss_bytes > limit * 2**20
        if status == "ok":
            _deliver(req.future, value)
        elif status == "bad_input":
            _deliver(req.future, error=ValueError(value))
        else:
            self._fail(req, EnvFailure("error", value))


class EnvSession:
    """One episode's handle on one env instance (in a worker process).

    ``async with pool.session() as env: await env.reset(task); await env.step(action)``. Leaving the block
    (also by an exception or a cancellation) releases the instance. After an :class:`EnvFailure` every
    call raises ``EnvFailure`` again. ``reset`` raises ``ValueError`` for a task (or env options) the env
    rejects; the session stays usable.
    """

    def __init__(self, pool: EnvPool, worker: _Worker, sid: int) -> None:
        self._pool = pool
        self._worker = worker
        self.sid = sid
        self.failure: EnvFailure | None = None
        self._was_reset = False
        self._closed = False

    @property
    def worker_index(self) -> int:
        return self._worker.index

    async def reset(self, task: TaskSpec) -> ResetResult:
        if not isinstance(task, TaskSpec):
            raise TypeError(f"EnvSession.reset: task must be a TaskSpec, got {type(task).__name__}: {task!r:.80}")
        result = await self._call("reset", task, self._pool.reset_timeout_s)
        self._was_reset = True
        return result

    async def step(self, action: str | None) -> StepResult:
        """``action``: ``extract_action(...)``'s output (None when the model gave none) or raw text."""
        if not self._was_reset and self.failure is None:
            raise RuntimeError("EnvSession.step called before reset")
        return await self._call("step", action, self._pool.step_timeout_s)

    async def observe_blueprint(self, subgoals: tuple[str, ...]) -> None:
        """Tell the env which blueprint this episode executes (``AgentEnv.observe_blueprint``)."""
        if not self._was_reset and self.failure is None:
            raise RuntimeError("EnvSession.observe_blueprint called before reset")
        return await self._call("observe_blueprint", tuple(subgoals), self._pool.step_timeout_s)

    async def _call(self, op: str, payload: Any, timeout: float):
        if self._closed:
            raise RuntimeError(f"EnvSession.{op} called on a closed session")
        if self.failure is not None:
            raise EnvFailure(self.failure.kind, f"this session already failed: {self.failure.detail}")
        if self._pool.closed:
            self.failure = EnvFailure("error", "the env pool was closed")
            raise self.failure
        future: cf.Future = cf.Future()
        self._worker.queue.put(_Request(op, self.sid, payload, timeout, future))
        try:
            return await asyncio.wrap_future(future)
        except EnvFailure as failure:
            self.failure = failure
            raise

    def close(self) -> None:
        """Release the env instance (idempotent, never blocks, safe during cancellation)."""
        if self._closed:
            return
        self._closed = True
        self._pool._release(self)

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> EnvSession:
        return self

    async def __aexit__(self, *exc_info) -> None:
        self.close()


class EnvPool:
    """Env instances of one kind in ``num_workers`` processes, shared by many concurrent sessions."""

    def __init__(self, env_name: str, env_kwargs: dict | None = None, num_workers: int = 2,
                 reset_timeout_s: float = 120.0, step_timeout_s: float = 30.0,
                 max_worker_rss_mb: float | None = 2048.0) -> None:
        self.check_settings(num_workers=num_workers, reset_timeout_s=reset_timeout_s, step_timeout_s=step_timeout_s,
                            max_worker_rss_mb=max_worker_rss_mb)
        self.max_worker_rss_mb = None if max_worker_rss_mb is None else float(max_worker_rss_mb)
        self.env_name = env_name
        self.target = resolve_env_target(env_name)
        self.env_kwargs = dict(env_kwargs or {})
        self.num_workers = num_workers
        self.reset_timeout_s = float(reset_timeout_s)
        self.step_timeout_s = float(step_timeout_s)
        self.closed = False
        self._owner_pid = os.getpid()  # a forked child must never stop its parent's workers
        self._lock = threading.Lock()
        self._sids = itertools.count(1)
        self._workers = [_Worker(self, i) for i in range(num_workers)]
        _LIVE_POOLS.add(self)

    @staticmethod
    def check_settings(**settings: Any) -> None:
        """Raise ValueError naming the setting when ``settings`` (the ``himac.pool`` keys: num_workers,
        reset_timeout_s, step_timeout_s, max_worker_rss_mb) cannot build a pool; starts nothing, so the
        config check runs it before Ray starts. Unknown names and bools where numbers belong are rejected."""
        known = ("num_workers", "reset_timeout_s", "step_timeout_s", "max_worker_rss_mb")
        unknown = sorted(set(settings) - set(known))
        if unknown:
            raise ValueError(f"EnvPool: unknown setting {unknown[0]!r} (known: {', '.join(known)})")

        def number(value: Any) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

        workers = settings.get("num_workers", 2)
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"EnvPool num_workers must be an int >= 1, got {workers!r}")
        for name in ("reset_timeout_s", "step_timeout_s"):
            value = settings.get(name, 1.0)
            if not number(value) or not value > 0:
                raise ValueError(f"EnvPool {name} must be a finite number > 0, got {value!r}")
        rss = settings.get("max_worker_rss_mb")
        if rss is not None and not (number(rss) and rss > 0):
            raise ValueError(f"EnvPool max_worker_rss_mb must be a finite number > 0 or None, got {rss!r}")

    @property
    def num_restarts(self) -> int:
        """Worker processes replaced so far (crashes, timeouts, deaths)."""
        return sum(w.restarts for w in self._workers)

    @property
    def num_recycles(self) -> int:
        """Worker processes replaced for memory while idle."""
        return sum(w.recycles for w in self._workers)

    def worker_pids(self) -> list[int | None]:
        """Current worker process ids (None for a worker not started yet); for tests and diagnostics."""
        return [w.proc.pid if w.proc is not None else None for w in self._workers]

    def session(self) -> EnvSession:
        """A new session on the least loaded worker (its env is built or reused on the first reset)."""
        if self.closed:
            raise RuntimeError(f"EnvPool({self.env_name!r}) is closed")
        with self._lock:
            worker = min(self._workers, key=lambda w: (w.draining, w.open_sessions, w.index))
            worker.open_sessions += 1
            sid = next(self._sids)
        return EnvSession(self, worker, sid)

    def _release(self, session: EnvSession) -> None:
        worker = session._worker
        with self._lock:
            worker.open_sessions -= 1
        if not self.closed:
            worker.queue.put(_Request("release", session.sid, None, self.step_timeout_s, None))

    def close(self) -> None:
        """Stop every worker process and wait for it (blocking; see :meth:`aclose`). Idempotent."""
        if not self.closed:
            self.closed = True
            for w in self._workers:
                w.queue.put(_STOP)
        for w in self._workers:
            w.thread.join()
        _LIVE_POOLS.discard(self)

    async def aclose(self) -> None:
        """Stop every worker process without blocking the event loop. Pending calls get EnvFailure."""
        await asyncio.get_running_loop().run_in_executor(None, self.close)


_LIVE_POOLS: weakref.WeakSet[EnvPool] = weakref.WeakSet()
_POOLS: dict[tuple[int, str, str], EnvPool] = {}
_POOLS_LOCK = threading.Lock()


def _pool_key(env_name: str, env_kwargs: dict | None) -> tuple[int, str, str]:
    try:
        kwargs = json.dumps(env_kwargs or {}, sort_keys=True)
    except TypeError as exc:
        raise ValueError(f"get_env_pool: env_kwargs must be JSON-like (they key the pool), got {env_kwargs!r}") from exc
    return os.getpid(), env_name, kwargs


def get_env_pool(env_name: str, env_kwargs: dict | None = None, **pool_kwargs) -> EnvPool:
    """One pool per (process, env_name, env_kwargs): verl creates one agent-loop instance per session,
    so pools must be per-process singletons, not per loop.

    ``pool_kwargs`` (``num_workers``, timeouts) apply when the pool is created; asking again with other
    values is a configuration conflict and raises ValueError rather than silently using the first ones.
    """
    key = _pool_key(env_name, env_kwargs)
    with _POOLS_LOCK:
        pool = _POOLS.get(key)
        if pool is not None and not pool.closed:
            for name, value in pool_kwargs.items():
                current = getattr(pool, name, None)
                if current is None or current != value:
                    raise ValueError(f"get_env_pool({env_name!r}): the pool exists with {name}={current!r}, "
                                     f"asked for {name}={value!r}")
            return pool
        pool = EnvPool(env_name, env_kwargs, **pool_kwargs)
        _POOLS[key] = pool
        return pool


@atexit.register
def _kill_live_pools() -> None:
    for pool in list(_LIVE_POOLS):
        if pool._owner_pid != os.getpid():
            continue
        pool.closed = True
        for w in pool._workers:
            w.kill_now()


# ---------------------------------------------------------------------------------------------------------
# The worker process: ``python -m himac_verl.envs.pool <fd>``.


def _serve_request(op: str, sid: int, payload: Any, envs: dict[int, Any], free: list[Any], make) -> Any:
    """One request inside the worker; the env's own exceptions propagate to ``_worker_main``."""
    if op == "release":
        env = envs.pop(sid, None)
        if env is not None:
            free.append(env)
        return None
    if op == "reset":
        env = envs.get(sid)
        if env is None:
            env = free.pop() if free else make()
            envs[sid] = env
        return env.reset(payload)
    if op in ("step", "observe_blueprint"):
        if sid not in envs:
            raise RuntimeError(f"session {sid} has no env in this worker ({op} before reset?)")
        return getattr(envs[sid], op)(payload)
    raise RuntimeError(f"unknown env pool request {op!r}")


def _worker_main(fd: int) -> None:
    from himac_verl.envs import make_env

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the parent, which shuts us down
    conn = Connection(fd)
    _, init = conn.recv()
    sys.path.extend(p for p in init["sys_path"] if p not in sys.path)
    target, kwargs = init["target"], init["kwargs"]
    envs: dict[int, Any] = {}
    free: list[Any] = []
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            break  # the parent is gone
        op = msg[0]
        if op == "shutdown":
            break
        _, sid, payload = msg
        try:
            reply = ("ok", _serve_request(op, sid, payload, envs, free, lambda: make_env(target, **kwargs)))
        except ValueError as exc:
            if op == "reset":
                # A bad task or bad env options: the caller's error, not the env's. The instance (if one
                # was built) is intact and stays with the session.
                reply = ("bad_input", f"{exc} (raised by {target} reset in an env worker process)")
            else:
                reply = _discard(envs, sid, target, op)
        except Exception:  # noqa: BLE001 - reported to the caller as EnvFailure("error")
            reply = _discard(envs, sid, target, op)
        try:
            conn.send((*reply, _resident_bytes()))
        except (EOFError, OSError):
            break
        except Exception:  # noqa: BLE001 - an unpicklable result
            reply = ("error", f"{target} {op} returned a result that cannot be sent:\n{traceback.format_exc()}")
            conn.send((*reply, _resident_bytes()))
    for env in list(envs.values()) + free:
        try:
            env.close()
        except Exception:  # noqa: BLE001
            pass


def _resident_bytes() -> int:
    """This process's resident memory (Linux ``/proc``; peak RSS elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _discard(envs: dict[int, Any], sid: int, target: str, op: str) -> tuple[str, str]:
    """Drop a session's env after it raised (its state is unknown) and describe the error."""
    detail = f"{target} {op} raised:\n{traceback.format_exc()}"
    broken = envs.pop(sid, None)
    if broken is not None:
        try:
            broken.close()
        except Exception:  # noqa: BLE001
            pass
    return ("error", detail)


if __name__ == "__main__":
    _worker_main(int(sys.argv[1]))
