"""Benchmark: the `himac` estimator against verl's `grpo_vectorized` on the same batch.

1,024 samples x 512 response tokens, 16 tasks, both passes (per task: 4 planner samples, 4 greedy scoring
episodes and 4 micro-pass episodes sharing 60 executor turn samples, uneven, at least 2 turns each).
verl gets the same response_mask, each sample's episode_return as its score on the last response token,
and one uid per task.

Timed separately (median of --repeats interleaved rounds after warm-up, --threads torch threads for all;
the default 1 keeps figures stable on a shared machine, where multi-threaded kernels mostly measure
contention):
- verl grpo_vectorized(token_level_rewards, response_mask, uid): includes verl's own uid factorisation;
- himac compute_advantage("himac", fields, response_mask) on ready SampleFields;
- SampleFields.from_extra_fields(dicts): validation and factorisation of the per-sample dicts.
The headline ratio compares the first two; the ratio including the field conversion is printed too.
gigpo and episode_grpo on a flat batch of the same size are printed for reference.

    .venv/bin/python benchmarks/bench_advantage.py [--repeats 50] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from himac_verl.advantage import SampleFields, compute_advantage

B, T, TASKS = 1024, 512, 16
PER_TASK = B // TASKS  # 64
N = 4  # blueprints and micro episodes per task


def _turn_counts(rng: np.random.Generator, episodes: int, total: int, low: int = 2) -> list[int]:
    """Split `total` turn samples into `episodes` episodes of at least `low` turns, unevenly."""
    extra = rng.multinomial(total - low * episodes, rng.dirichlet(np.ones(episodes)))
    return (extra + low).tolist()


def _step(ep: dict, turn: int, n_turns: int, rng: np.random.Generator) -> tuple[float, float]:
    """(step_reward, penalty) of one turn: a 10 % chance of an invalid action (-0.1), 10 at a won end."""
    penalty = -0.1 if rng.random() < 0.1 else 0.0
    return penalty + (10.0 if ep["won"] and turn == n_turns else 0.0), penalty


def himac_batch(rng: np.random.Generator) -> list[dict]:
    out: list[dict] = []
    for t in range(TASKS):
        task = f"alfworld/train/{t}"
        counts = _turn_counts(rng, 2 * N, PER_TASK - N)
        won = rng.random(2 * N) < 0.45
        bps = [f"{task}/bp{b}" for b in range(N)]
        episodes = [dict(uid=f"{task}/greedy{b}", bp=bps[b], pass_="macro", won=bool(won[b])) for b in range(N)]
        best = int(np.argmax(won[:N]))
        episodes += [dict(uid=f"{task}/micro{m}", bp=bps[best], pass_="micro", won=bool(won[N + m])) for m in range(N)]
        for ep, n_turns in zip(episodes, counts):
            steps = [_step(ep, k + 1, n_turns, rng) for k in range(n_turns)]
            ep["ret"] = float(sum(r for r, _ in steps))
            ep["pen"] = float(sum(p for _, p in steps))
            for k, (r, p) in enumerate(steps):
                out.append(_fields("executor", task, ep["bp"], ep["uid"], ep["pass_"], k + 1, r,
                                   ep["ret"], ep["won"], f"state {k % 5}", k // 3, p, ep["pen"]))
        for b in range(N):  # planner sample b: scored by greedy episode b
            ep = episodes[b]
            plan = f"{task}/plan{b}"
            out.append(_fields("planner", task, bps[b], plan, "macro", 0, 0.0, ep["ret"], ep["won"], "", -1,
                               0.0, ep["pen"]))
    assert len(out) == B
    return out


def flat_batch(rng: np.random.Generator) -> list[dict]:
    out: list[dict] = []
    for t in range(TASKS):
        task = f"alfworld/train/{t}"
        counts = _turn_counts(rng, 2 * N, PER_TASK)
        for e, n_turns in enumerate(counts):
            ep = dict(won=bool(rng.random() < 0.45))
            steps = [_step(ep, k + 1, n_turns, rng) for k in range(n_turns)]
            ret, pen = float(sum(r for r, _ in steps)), float(sum(p for _, p in steps))
            for k, (r, p) in enumerate(steps):
                out.append(_fields("flat", task, "", f"{task}/e{e}", "micro", k + 1, r, ret,
                                   ep["won"], f"state {int(rng.integers(0, 6))}", -1, p, pen))
    assert len(out) == B
    return out


def _fields(role, task, bp, ep, pass_, turn, r, ret, won, anchor, sub, penalty, episode_penalty) -> dict:
    return {
        "role": role, "task_uid": task, "blueprint_uid": bp, "episode_uid": ep, "pass": pass_, "turn": turn,
        "subgoal_index": sub, "step_reward": r, "episode_return": ret, "won": won, "anchor": anchor,
        "penalty": penalty, "episode_penalty": episode_penalty, "failed": False,
    }


def median_ms(fns: dict, repeats: int, warmup: int = 3) -> dict[str, float]:
    """Median wall time of each function in ms. The functions run interleaved, one round at a time, so
    a load change on the shared machine hits all of them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) * 1e3 for name, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (same for both)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from verl.trainer.ppo.core_algos import compute_grpo_vectorized_outcome_advantage as verl_grpo_vectorized

    rng = np.random.default_rng(0)
    samples = himac_batch(rng)
    lengths = torch.from_numpy(rng.integers(16, T + 1, size=B))
    response_mask = (torch.arange(T)[None, :] < lengths[:, None]).long()  # verl's mask dtype
    token_level_rewards = torch.zeros(B, T)
    token_level_rewards[torch.arange(B), lengths - 1] = torch.tensor([s["episode_return"] for s in samples])
    uid = np.array([s["task_uid"] for s in samples], dtype=object)
    fields = SampleFields.from_extra_fields(samples)

    flat = flat_batch(rng)
    flat_fields = SampleFields.from_extra_fields(flat)
    ms = median_ms(
        {
            "verl": lambda: verl_grpo_vectorized(token_level_rewards, response_mask, uid),
            "himac": lambda: compute_advantage("himac", fields, response_mask),
            "fields": lambda: SampleFields.from_extra_fields(samples),
            "episode_grpo": lambda: compute_advantage("episode_grpo", flat_fields, response_mask),
            "gigpo": lambda: compute_advantage("gigpo", flat_fields, response_mask),
        },
        args.repeats,
    )
    t_verl, t_himac, t_fields, t_episode, t_gigpo = (
        ms[k] for k in ("verl", "himac", "fields", "episode_grpo", "gigpo")
    )

    adv, _ = compute_advantage("himac", fields, response_mask)
    print(f"batch: {B} samples x {T} tokens, {TASKS} tasks, {fields.num_episodes} episodes "
          f"({int(response_mask.sum())} response tokens); torch threads {torch.get_num_threads()}; "
          f"median of {args.repeats} runs")
    print(f"  nonzero-advantage samples (planner + micro pass): {int((adv.abs().sum(1) > 0).sum())}")
    print(f"verl grpo_vectorized (incl. its uid factorisation) {t_verl:8.3f} ms")
    print(f"himac estimator (on ready SampleFields)            {t_himac:8.3f} ms   ratio {t_himac / t_verl:.2f}x "
          f"(target <= 1.2x)")
    print(f"field conversion (1,024 dicts -> SampleFields)     {t_fields:8.3f} ms")
    print(f"himac incl. field conversion                       {t_himac + t_fields:8.3f} ms   "
          f"ratio {(t_himac + t_fields) / t_verl:.2f}x")
    print(f"flat batch: episode_grpo {t_episode:.3f} ms, gigpo {t_gigpo:.3f} ms (on ready SampleFields)")


if __name__ == "__main__":
    main()
