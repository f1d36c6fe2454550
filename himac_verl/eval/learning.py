"""Did the policy learn? Held-out success before -> after on the SAME levels, with a paired test.

The trainer's validation runs (``trainer.val_before_train``, ``trainer.test_freq``, and the last step)
write every held-out episode to ``himac.eval_log_file`` with the global step in ``extra["global_step"]``
(``himac_verl.eval.episodes.ValidationEpisodeLog``). From that log:

- :func:`success_by_step` - held-out success per validation step, with Wilson 95% intervals;
- :func:`paired_comparison` - the first and the last validation paired level by level: the discordant
  counts b (failed before, won after) and c (won before, failed after) and McNemar's exact test (the
  two-sided binomial test of b against b + c at one half), which asks whether the change in success on
  the same levels is larger than chance;
- :func:`learning_report` / :func:`plot_learning` - both, plus the training curves of the metrics JSONL,
  as ``learning.json`` and ``learning.png`` (held-out success and train success per phase against steps,
  the phases shaded and labelled).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from himac_verl.eval.episode_log import EpisodeRecord, read_episodes
from himac_verl.eval.stats import wilson_interval

STEP_KEY = "global_step"


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: P(|X - n/2| >= |b - n/2|) for X ~ Binomial(n = b + c, 1/2).

    1.0 when there is no discordant pair (no evidence either way)."""
    if b < 0 or c < 0 or int(b) != b or int(c) != c:
        raise ValueError(f"discordant counts b={b!r}, c={c!r}: expected integers >= 0")
    n = int(b + c)
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = math.fsum(math.comb(n, i) for i in range(int(k) + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


@dataclass(frozen=True)
class SuccessPoint:
    step: int
    n: int
    wins: int
    rate: float
    low: float
    high: float


@dataclass(frozen=True)
class PairedComparison:
    """The first vs the last validation on the levels both evaluated."""

    step_before: int
    step_after: int
    n: int  # paired levels
    before: SuccessPoint
    after: SuccessPoint
    b: int  # failed before, won after
    c: int  # won before, failed after
    p_value: float  # McNemar exact, two-sided

    def line(self) -> str:
        b, a = self.before, self.after
        return (f"held-out success {b.rate:.3f} [{b.low:.3f}, {b.high:.3f}] -> {a.rate:.3f} [{a.low:.3f}, "
                f"{a.high:.3f}] on the same {self.n} levels (steps {self.step_before} -> {self.step_after}; "
                f"{self.b} newly solved, {self.c} lost; McNemar exact p = {self.p_value:.2g})")


def record_step(record: EpisodeRecord) -> int:
    step = record.extra.get(STEP_KEY)
    if step is None:
        raise ValueError(f"episode {record.task_uid}: no extra[{STEP_KEY!r}] (written by the trainer's validation "
                         "log since it tags steps); was this log written by `python -m himac_verl.eval run`?")
    return int(step)


def by_step(records: Sequence[EpisodeRecord]) -> dict[int, dict[str, bool]]:
    """step -> task_uid -> won (the last record of a task at a step wins: one greedy episode per task)."""
    out: dict[int, dict[str, bool]] = {}
    for record in records:
        out.setdefault(record_step(record), {})[record.task_uid] = bool(record.won)
    return dict(sorted(out.items()))


def success_point(step: int, outcomes: dict[str, bool]) -> SuccessPoint:
    wins, n = sum(outcomes.values()), len(outcomes)
    low, high = wilson_interval(wins, n)
    return SuccessPoint(step, n, wins, wins / n, low, high)


def success_by_step(records: Sequence[EpisodeRecord]) -> list[SuccessPoint]:
    return [success_point(step, outcomes) for step, outcomes in by_step(records).items()]


def paired_comparison(records: Sequence[EpisodeRecord], step_before: int | None = None,
                      step_after: int | None = None) -> PairedComparison:
    """Pair two validations (default: the first and the last) on the levels both evaluated."""
    steps = by_step(records)
    if len(steps) < 2:
        raise ValueError(f"a paired comparison needs two validations; the log has steps {sorted(steps)}")
    first = min(steps) if step_before is None else step_before
    last = max(steps) if step_after is None else step_after
    before, after = steps[first], steps[last]
    common = sorted(set(before) & set(after))
    if not common:
        raise ValueError(f"validations at steps {first} and {last} share no level")
    b = sum(1 for t in common if after[t] and not before[t])
    c = sum(1 for t in common if before[t] and not after[t])
    return PairedComparison(first, last, len(common), success_point(first, {t: before[t] for t in common}),
                            success_point(last, {t: after[t] for t in common}), b, c, mcnemar_exact_p(b, c))


TRAIN_SUCCESS = {  # metric -> label of the training curves
    "himac/success/micro": "train success, phase B executions",
    "himac/success/macro": "train success, phase A greedy scoring",
    "himac/success/flat": "train success (flat episodes)",
}


def _train_curves(metrics_file: str | Path | None) -> tuple[dict[str, list[tuple[int, float]]], list[tuple[int, str]]]:
    """(metric -> [(step, value)], [(step, phase)]) from the trainer's metrics JSONL."""
    curves: dict[str, list[tuple[int, float]]] = {}
    phases: list[tuple[int, str]] = []
    if not metrics_file or not Path(metrics_file).exists():
        return curves, phases
    for line in Path(metrics_file).read_text().splitlines():
        record = json.loads(line)
        if "step" not in record:
            continue
        step = int(record["step"])
        if record.get("phase"):
            phases.append((step, str(record["phase"])))
        for key in TRAIN_SUCCESS:
            value = record.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                curves.setdefault(key, []).append((step, float(value)))
    return curves, phases


def phase_spans(phases: Sequence[tuple[int, str]]) -> list[tuple[int, int, str]]:
    """Contiguous (first step, last step, phase) runs."""
    spans: list[list] = []
    for step, phase in sorted(phases):
        if spans and spans[-1][2] == phase:
            spans[-1][1] = step
        else:
            spans.append([step, step, phase])
    return [(a, b, p) for a, b, p in spans]


def learning_report(eval_log: str | Path, metrics_file: str | Path | None = None) -> dict[str, Any]:
    """Everything ``learning.json`` holds: the paired comparison, the held-out curve, the train curves."""
    records = read_episodes(eval_log)
    comparison = paired_comparison(records)
    curves, phases = _train_curves(metrics_file)
    return {
        "paired": {**asdict(comparison), "line": comparison.line()},
        "held_out": [asdict(p) for p in success_by_step(records)],
        "train": {k: [list(v) for v in vals] for k, vals in curves.items()},
        "phases": [list(p) for p in phases],
    }


PHASE_STYLE = {"macro": ("#dbe9f6", "phase A (planner learns)"), "micro": ("#fde2cf", "phase B (executor learns)"),
               "joint": ("#e3f2d9", "joint"), "flat": ("#eeeeee", "flat baseline")}


def plot_learning(report: dict[str, Any], path: str | Path, title: str) -> Path:
    """Held-out success (with Wilson bars) and train success per phase against steps, phases shaded."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    fig = Figure(figsize=(8.0, 4.2), dpi=130)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    shown = []
    for start, end, phase in phase_spans([tuple(p) for p in report.get("phases", [])]):
        color, _ = PHASE_STYLE.get(phase, ("#f4f4f4", phase))
        ax.axvspan(start - 0.5, end + 0.5, color=color, lw=0, zorder=0)
        if phase not in shown:
            shown.append(phase)
    held = report["held_out"]
    steps = [p["step"] for p in held]
    rates = [p["rate"] for p in held]
    err = [[p["rate"] - p["low"] for p in held], [p["high"] - p["rate"] for p in held]]
    sizes = sorted({p["n"] for p in held})
    levels = f"{sizes[0]} levels" if len(sizes) == 1 else f"{held[0]['n']} levels first/last, {sizes[0]} between"
    ax.errorbar(steps, rates, yerr=err, marker="o", ms=5, lw=2, capsize=3, color="#1f4e99",
                label=f"held-out success (greedy; {levels}; 95% CI)")
    colors = {"himac/success/micro": "#d9622b", "himac/success/macro": "#3d8c40", "himac/success/flat": "#7a4ea3"}
    for key, label in TRAIN_SUCCESS.items():
        points = report["train"].get(key, [])
        if points:
            ax.plot([s for s, _ in points], [v for _, v in points], marker=".", ms=4, lw=1, alpha=0.8,
                    color=colors[key], label=label)
    paired = report["paired"]
    ax.set_title(f"{title}\n{paired['before']['rate']:.2f} -> {paired['after']['rate']:.2f} held-out success, "
                 f"McNemar p = {paired['p_value']:.2g}", fontsize=9)
    ax.set_xlabel("training step")
    ax.set_ylabel("success rate")
    top = max([0.05] + rates + [p["high"] for p in held] + [v for pts in report["train"].values() for _, v in pts])
    ax.set_ylim(0, min(1.0, top * 1.1 + 0.02))
    last = max(steps + [s for pts in report["train"].values() for s, _ in pts])
    ax.set_xlim(min(steps) - 0.6, last + 0.6)
    handles, labels = ax.get_legend_handles_labels()
    handles += [Patch(color=PHASE_STYLE.get(p, ("#f4f4f4", p))[0], label=PHASE_STYLE.get(p, ("", p))[1]) for p in shown]
    ax.legend(handles=handles, fontsize=7, loc="upper left", framealpha=0.9)
    ax.grid(alpha=0.3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    return path


def write_learning_report(eval_log: str | Path, metrics_file: str | Path | None, out_dir: str | Path,
                          title: str = "HiMAC on Sokoban (CPU)") -> dict[str, Any]:
    """``learning.json`` and ``learning.png`` into ``out_dir``; returns the report (with the png path)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = learning_report(eval_log, metrics_file)
    report["png"] = str(plot_learning(report, out_dir / "learning.png", title))
    (out_dir / "learning.json").write_text(json.dumps(report, indent=1))
    return report


__all__ = ["PairedComparison", "SuccessPoint", "learning_report", "mcnemar_exact_p", "paired_comparison",
           "plot_learning", "success_by_step", "write_learning_report"]
