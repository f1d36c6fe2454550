"""A CPU-scale version of the paper's Tables 3 and 4: HiMAC vs flat GRPO vs GiGPO, trained from the same start
with the same budget on the main job's Sokoban setting, and (behind a flag) the three HiMAC ablations.

    .venv/bin/python benchmarks/bench_learning.py                # HiMAC, GRPO, GiGPO x 3 seeds (~60 min, 2 cores)
    .venv/bin/python benchmarks/bench_learning.py --quick        # HiMAC vs GRPO, 1 seed (~15 min)
    .venv/bin/python benchmarks/bench_learning.py --ablations    # + no <sub_done>, random blueprint, joint (1 seed)

Every run is the main job's preset (``+preset=sokoban_learning``, the warm-started ``sokoban_agent`` model)
with the method's switches, on ONE Ray start-up, and differs across seeds only in the training-task order
and the sampling seed. Same budget: the same training steps, tasks per step and group size for every
method. HiMAC spends more env episodes per step (its macro pass scores N blueprints greedily before the
micro pass runs N executions), so the table reports both the paper's "iterations to reach a target" and
the env episodes spent until then. Held-out success is greedy, on the same test levels before and after
(``himac.eval_log_file``), with Wilson 95% intervals pooled over seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

METHODS: dict[str, list[str]] = {
    "himac": ["algorithm.adv_estimator=himac", "himac.schedule.mode=coevolve"],
    "grpo": ["algorithm.adv_estimator=episode_grpo", "himac.schedule.mode=flat"],
    "gigpo": ["algorithm.adv_estimator=gigpo", "himac.schedule.mode=flat"],
    # the paper's ablations (Table 4)
    "himac_no_sub_done": ["algorithm.adv_estimator=himac", "himac.schedule.mode=coevolve",
                          "himac.agent.use_sub_done=false"],
    "himac_random_blueprint": ["algorithm.adv_estimator=himac", "himac.schedule.mode=coevolve",
                               "himac.agent.blueprint_selection=random"],
    "himac_joint": ["algorithm.adv_estimator=himac", "himac.schedule.mode=joint"],
}
MAIN = ("himac", "grpo", "gigpo")
ABLATIONS = ("himac_no_sub_done", "himac_random_blueprint", "himac_joint")
EPISODE_KEYS = ("himac/episodes/macro", "himac/episodes/micro", "himac/episodes/flat")


@dataclass
class Run:
    method: str
    seed: int
    wall_s: float
    held_out: list[dict]  # [{step, n, wins, rate, low, high}] per validation
    paired: dict  # the before/after comparison (learning.json)
    episodes_by_step: list[tuple[int, float]]  # (step, training env episodes of that step)
    step_seconds: list[float]
    extra: dict = field(default_factory=dict)

    def steps_to(self, target: float) -> int | None:
        """First validation step (after training started) whose held-out success reaches ``target``."""
        return next((p["step"] for p in self.held_out if p["step"] > 0 and p["rate"] >= target), None)

    def episodes_to(self, step: int | None) -> float | None:
        if step is None:
            return None
        return sum(e for s, e in self.episodes_by_step if s <= step)


def run_one(method: str, seed: int, args, root: Path) -> Run:
    from himac_verl.main import run
    from himac_verl.trainer.runs import compose_config, read_metrics, wait_named_actors_gone

    out = root / f"{method}_s{seed}"
    out.mkdir(parents=True, exist_ok=True)
    metrics, episodes = out / "metrics.jsonl", out / "episodes.jsonl"
    for f in (metrics, episodes):
        f.unlink(missing_ok=True)
    overrides = [
        "mode=cpu", "+preset=sokoban_learning", *METHODS[method],
        f"himac.data.seed={seed}", f"data.seed={seed}", f"actor_rollout_ref.rollout.seed={seed}",
        f"trainer.total_training_steps={args.steps}", f"trainer.test_freq={args.test_freq}",
        f"himac.data.val_size={args.levels}", f"himac.val_levels_between={args.levels_between}",
        f"himac.metrics_file={metrics}", f"himac.eval_log_file={episodes}",
        f"himac.tensorboard_dir={out / 'tensorboard'}", f"trainer.default_local_dir={out / 'checkpoints'}",
        "trainer.save_freq=-1", "trainer.logger=[console]", f"trainer.experiment_name=bench_{method}_s{seed}",
        *args.override,
    ]
    print(f"\n=== {method} seed {seed}: {args.steps} steps ===", flush=True)
    start = time.perf_counter()
    run(compose_config(overrides))
    wall = time.perf_counter() - start
    wait_named_actors_gone(timeout_s=120)
    report = json.loads((out / "learning.json").read_text())
    _, records = read_metrics(metrics)
    train = [r for r in records if "himac/samples/trained" in r]
    result = Run(method, seed, wall, report["held_out"], report["paired"],
                 [(int(r["step"]), sum(float(r.get(k, 0.0)) for k in EPISODE_KEYS)) for r in train],
                 [float(r["timing_s/step"]) for r in train if "timing_s/step" in r])
    print(f"=== {method} seed {seed}: {report['paired']['line']} ({wall:.0f} s) ===", flush=True)
    return result


def _mean(values) -> float:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else float("nan")


def _fmt(value, digits=1) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.{digits}f}"


def table(runs: list[Run], target: float) -> tuple[str, dict]:
    """Markdown table per method (seeds pooled) and the HiMAC / GRPO ratios."""
    from himac_verl.eval.stats import wilson_interval

    rows, stats = [], {}
    for method in dict.fromkeys(r.method for r in runs):
        mine = [r for r in runs if r.method == method]
        wins_b = sum(r.paired["before"]["wins"] for r in mine)
        wins_a = sum(r.paired["after"]["wins"] for r in mine)
        n = sum(r.paired["n"] for r in mine)
        lo, hi = wilson_interval(wins_a, n)
        steps = [r.steps_to(target) for r in mine]
        eps = [r.episodes_to(s) for r, s in zip(mine, steps)]
        reached = sum(s is not None for s in steps)
        stats[method] = {
            "seeds": len(mine), "before": wins_b / n, "after": wins_a / n, "after_ci": (lo, hi),
            "p_values": [r.paired["p_value"] for r in mine], "steps_to_target": steps, "episodes_to_target": eps,
            "episodes_per_step": _mean([_mean([e for _, e in r.episodes_by_step]) for r in mine]),
            "seconds_per_step": _mean([_mean(r.step_seconds) for r in mine]),
        }
        s = stats[method]
        rows.append(f"| {method} | {len(mine)} | {s['before']:.3f} | **{s['after']:.3f}** [{lo:.3f}, {hi:.3f}] "
                    f"| {', '.join(f'{p:.2g}' for p in s['p_values'])} | {reached}/{len(mine)}: "
                    f"{_fmt(_mean(steps))} | {_fmt(_mean(eps), 0)} | {s['episodes_per_step']:.0f} "
                    f"| {s['seconds_per_step']:.0f} |")
    lines = ["| method | seeds | held-out success before | after [95% Wilson, pooled] | McNemar p per seed "
             f"| runs reaching {target:g}: mean iterations | mean env episodes to {target:g} | env episodes / step "
             "| s / step |", "|---|---|---|---|---|---|---|---|---|", *rows]
    if {"himac", "grpo"} <= stats.keys():
        h, g = stats["himac"], stats["grpo"]

        def ratio(a, b):
            return _fmt(a / b, 2) if a is not None and b and math.isfinite(a) and math.isfinite(b) else "n/a"

        lines += ["", "| HiMAC / GRPO | final success | iterations to target | env episodes to target | env episodes "
                  "per step | s per step |", "|---|---|---|---|---|---|",
                  f"| ratio | {ratio(h['after'], g['after'])} | {ratio(_mean(h['steps_to_target']), _mean(g['steps_to_target']))} "
                  f"| {ratio(_mean(h['episodes_to_target']), _mean(g['episodes_to_target']))} "
                  f"| {ratio(h['episodes_per_step'], g['episodes_per_step'])} "
                  f"| {ratio(h['seconds_per_step'], g['seconds_per_step'])} |"]
    return "\n".join(lines), stats


def plot(runs: list[Run], path: Path, target: float) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.2), dpi=130)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for method in dict.fromkeys(r.method for r in runs):
        mine = [r for r in runs if r.method == method]
        steps = sorted({p["step"] for r in mine for p in r.held_out})
        means = [_mean([next((p["rate"] for p in r.held_out if p["step"] == s), None) for r in mine]) for s in steps]
        ax.plot(steps, means, marker="o", lw=2 if method in MAIN else 1, label=f"{method} ({len(mine)} seed(s))")
    ax.axhline(target, color="crimson", ls="--", lw=1, label=f"target {target:g}")
    ax.set_xlabel("training step (iteration)")
    ax.set_ylabel("held-out greedy success")
    ax.set_title("Sokoban 6x6 on CPU: held-out success by method (mean over seeds)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.savefig(path, bbox_inches="tight")
    return path


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="HiMAC vs GRPO, 1 seed")
    p.add_argument("--ablations", action="store_true", help="also the three HiMAC ablations (1 seed each)")
    p.add_argument("--methods", default=None, help="comma-separated subset of " + ", ".join(METHODS))
    p.add_argument("--seeds", type=int, default=3, help="seeds per main method (default 3; --quick: 1)")
    p.add_argument("--steps", type=int, default=6, help="training steps per run (same for every method)")
    p.add_argument("--test-freq", type=int, default=3, help="validate every this many steps (and at the end)")
    p.add_argument("--levels", type=int, default=64, help="held-out test levels, first and last validation")
    p.add_argument("--levels-between", type=int, default=32, help="held-out levels of the validations between")
    p.add_argument("--target", type=float, default=0.4, help="held-out success target of 'iterations to target'")
    p.add_argument("--out", default=str(REPO / "outputs" / "bench_learning"))
    p.add_argument("override", nargs="*", help="extra hydra overrides for every run")
    args = p.parse_args(argv)
    if args.methods:
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        bad = [m for m in methods if m not in METHODS]
        if bad:
            p.error(f"--methods: unknown {bad}; choose from {list(METHODS)}")
    else:
        methods = ["himac", "grpo"] if args.quick else list(MAIN)
    seeds = 1 if args.quick else args.seeds
    args.plan = [(m, s) for m in methods for s in range(seeds)]
    if args.ablations:
        args.plan += [(m, 0) for m in ABLATIONS if m not in methods]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_common import start_ray

    from himac_verl.main import resolve_model_path

    resolve_model_path("sokoban_agent")  # build (or find) the starting model once, before Ray
    start_ray()
    import ray

    runs: list[Run] = []
    t0 = time.perf_counter()
    try:
        for method, seed in args.plan:
            runs.append(run_one(method, seed, args, out / "runs"))
            (out / "runs.json").write_text(json.dumps([asdict(r) for r in runs], indent=1))
    finally:
        ray.shutdown()
    total = time.perf_counter() - t0
    md, stats = table(runs, args.target)
    header = (f"Sokoban 6x6, CPU, `sokoban_agent` start; {args.steps} steps x preset batch; held-out: "
              f"{args.levels} test levels before/after ({args.levels_between} between); {len(runs)} runs in "
              f"{total / 60:.1f} min")
    png = plot(runs, out / "learning_by_method.png", args.target)
    print("\n" + header + "\n\n" + md + f"\n\nwrote {out / 'results.md'} and {png}", flush=True)
    (out / "results.md").write_text(f"{header}\n\n{md}\n")
    (out / "results.json").write_text(json.dumps({"total_s": total, "stats": stats,
                                                  "runs": [asdict(r) for r in runs]}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
