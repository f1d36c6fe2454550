"""Learning curves from training logs, and the paper's "iterations to reach a target success".

Two sources, read into the same long frame (columns step, metric, value, phase):

* **Metrics JSONL** (what our trainer writes; one object per logged step)::

      {"step": 12, "phase": "macro", "train/success": 0.25, "train/reward": 1.5, "val/success": 0.3}

  ``step`` (int >= 0, the training step) is required; ``phase`` (optional, a non-empty string:
  "macro" = phase A, "micro" = phase B, "joint", "flat") applies to every metric of its line; every
  other key is a metric whose value is a number, or null for "not measured at this step" (dropped).
  verl's own ``file`` logger lines (``{"step": k, "data": {...}}``) are read too. A step logged twice
  (a resumed run rewrites the steps after its checkpoint) keeps the last value.
* **TensorBoard** event files (verl's ``tensorboard`` logger; read with tensorboard's
  EventAccumulator). TensorBoard holds only numbers, so the phase travels as the scalar tag ``phase``
  with the codes of :data:`PHASE_CODES`. With several runs under the folder, tags become
  ``<run folder>:<tag>``.

Iterations to target: the first logged step at which the metric, smoothed by a trailing moving
average over the last ``window`` logged points (points, not steps: validation runs every k steps),
reaches ``target`` (>=). ``window`` = 1 is the raw metric; the first ``window - 1`` points have no
smoothed value and cannot count. None when never reached. The target is in the metric's own unit
(0.75 for a success in [0, 1]).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from himac_verl.core.contract import PHASE_CODES

NON_FINITE = ("nan", "inf", "-inf")
PHASE_TAG = "phase"
PHASE_COLORS = {"macro": "#fde2c8", "micro": "#d5e8d4", "joint": "#e1d5e7", "flat": "#eeeeee"}
METRIC_COLUMNS = ["step", "metric", "value", "phase"]


class MetricsLogError(ValueError):
    """A metrics line or event file that does not follow the schema; names file, line and key."""


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_metrics_jsonl(path: str | Path) -> pd.DataFrame:
    """Long frame (step, metric, value, phase) of a metrics JSONL file; see the module docstring."""
    path = Path(path)
    rows: list[tuple[int, str, float, str | None]] = []
    with path.open(encoding="utf-8") as fp:
        for lineno, line in enumerate(fp, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                data = json.loads(line)
            except json.JSONDecodeError as err:
                raise MetricsLogError(f"{where}: not valid JSON ({err})") from None
            if not isinstance(data, dict):
                raise MetricsLogError(f"{where}: expected a JSON object, got {type(data).__name__}")
            if "run_facts" in data and "step" not in data:  # our trainer's header line: what the run is made of
                continue
            if "data" in data and isinstance(data["data"], dict):  # verl's file logger
                data = {"step": data.get("step"), **data["data"]}
            step = data.get("step")
            if not isinstance(step, int) or isinstance(step, bool) or step < 0:
                raise MetricsLogError(f"{where}: field 'step': expected an int >= 0, got {step!r}")
            phase = data.get("phase")
            if phase is not None and (not isinstance(phase, str) or not phase):
                raise MetricsLogError(f"{where}: field 'phase': expected a non-empty string, got {phase!r}")
            for key, value in data.items():
                if key in ("step", "phase") or value is None:
                    continue
                if isinstance(value, str) and value in NON_FINITE:  # our trainer writes NaN/inf as strings
                    value = float(value)
                if not _is_number(value):
                    raise MetricsLogError(f"{where}: metric {key!r}: expected a number or null, got {value!r}")
                rows.append((step, key, float(value), phase))
    if not rows:
        raise MetricsLogError(f"{path}: no metrics")
    return _dedupe(pd.DataFrame(rows, columns=METRIC_COLUMNS))


def _dedupe(df: pd.DataFrame) -> pd.DataFrame:
    """Keep the last value per (metric, step) - later lines come from a resumed run - sorted by step."""
    df = df.drop_duplicates(subset=["metric", "step"], keep="last")
    return df.sort_values(["metric", "step"], kind="stable").reset_index(drop=True)


def _event_dirs(root: Path) -> list[Path]:
    if root.is_file():
        return [root.parent]
    return sorted({p.parent for p in root.rglob("events.out.tfevents.*")})


def read_tensorboard(path: str | Path) -> pd.DataFrame:
    """Long frame (step, metric, value, phase) of every scalar under a TensorBoard log folder."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    root = Path(path)
    dirs = _event_dirs(root)
    if not dirs:
        raise MetricsLogError(f"{root}: no TensorBoard event files (events.out.tfevents.*) found")
    frames = []
    for run_dir in dirs:
        acc = EventAccumulator(str(run_dir), size_guidance={SCALARS: 0})  # 0 = keep every point
        acc.Reload()
        prefix = "" if len(dirs) == 1 else f"{run_dir.relative_to(root if root.is_dir() else root.parent)}:"
        rows = [(e.step, f"{prefix}{tag}", float(e.value)) for tag in acc.Tags()[SCALARS] for e in acc.Scalars(tag)]
        run = pd.DataFrame(rows, columns=["step", "metric", "value"])
        run = run.drop_duplicates(subset=["metric", "step"], keep="last")
        phase_tag = f"{prefix}{PHASE_TAG}"
        phase_rows = run[run["metric"] == phase_tag]
        names = {code: name for name, code in PHASE_CODES.items()}
        bad = phase_rows[~phase_rows["value"].isin(list(names))]
        if not bad.empty:
            raise MetricsLogError(
                f"{run_dir}: tag {phase_tag!r} at step {int(bad['step'].iloc[0])}: "
                f"code {float(bad['value'].iloc[0])!r} "
                f"is not one of {PHASE_CODES}"
            )
        phase_of_step = dict(zip(phase_rows["step"], phase_rows["value"].map(lambda v: names[int(v)])))
        run = run[run["metric"] != phase_tag].copy()
        run["phase"] = run["step"].map(phase_of_step).astype(object)
        run.loc[run["phase"].isna(), "phase"] = None
        frames.append(run)
    df = pd.concat(frames, ignore_index=True)
    if df.empty:
        raise MetricsLogError(f"{root}: event files hold no scalars")
    return _dedupe(df[METRIC_COLUMNS])


def read_metrics(path: str | Path) -> pd.DataFrame:
    """Metrics from a JSONL file, or from a TensorBoard folder / event file."""
    path = Path(path)
    if not path.exists():
        raise MetricsLogError(f"metrics path {str(path)!r} does not exist")
    if path.is_dir() or path.name.startswith("events.out.tfevents."):
        return read_tensorboard(path)
    return read_metrics_jsonl(path)


def metric_series(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The (step, value, phase) rows of one metric, sorted by step; raises listing the known metrics."""
    rows = df[df["metric"] == metric]
    if rows.empty:
        raise MetricsLogError(f"metric {metric!r} not in the log; available: {sorted(df['metric'].unique())}")
    return rows[["step", "value", "phase"]].sort_values("step").reset_index(drop=True)


def smooth(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing moving average over the last ``window`` points; NaN for the first window-1 points.

    values: (T,) -> (T,)
    """
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        raise ValueError(f"window {window!r}: expected an int >= 1")
    return pd.Series(np.asarray(values, dtype=float)).rolling(window, min_periods=window).mean().to_numpy()


def iterations_to_target(
    steps: Sequence[int], values: Sequence[float], target: float, window: int = 1
) -> int | None:
    """First step whose trailing ``window``-point mean of ``values`` is >= ``target``; None if never.

    steps: (T,) strictly increasing training steps; values: (T,) the metric at those steps (no NaN).
    """
    steps_arr = np.asarray(steps)
    values_arr = np.asarray(values, dtype=float)
    if steps_arr.shape != values_arr.shape or steps_arr.ndim != 1:
        raise ValueError(f"steps {steps_arr.shape} and values {values_arr.shape}: expected two (T,) arrays")
    if not math.isfinite(target):
        raise ValueError(f"target {target!r}: expected a finite number")
    if np.any(np.diff(steps_arr) <= 0):
        raise ValueError("steps: expected strictly increasing steps")
    nan = ~np.isfinite(values_arr)
    if nan.any():
        raise ValueError(f"values: not finite at step {int(steps_arr[np.argmax(nan)])}")
    reached = np.flatnonzero(smooth(values_arr, window) >= target)  # NaN compares False
    return int(steps_arr[reached[0]]) if reached.size else None


def phase_spans(series: pd.DataFrame) -> list[tuple[float, float, str]]:
    """Contiguous (start_step, end_step, phase) runs of a metric's phase labels, for shading.
    A span reaches the next span's first step, so the shading has no gaps."""
    rows = series.dropna(subset=["phase"])
    spans: list[list] = []
    for step, phase in zip(rows["step"], rows["phase"]):
        if spans and spans[-1][2] == phase:
            spans[-1][1] = step
        else:
            if spans:
                spans[-1][1] = step
            spans.append([step, step, phase])
    return [(float(a), float(b), p) for a, b, p in spans]


def default_metrics(df: pd.DataFrame, limit: int = 6) -> list[str]:
    """Metrics worth plotting when none are named: those about success, reward or return."""
    names = sorted(df["metric"].unique())
    chosen = [m for m in names if any(k in m.lower() for k in ("success", "reward", "return", "won", "score"))]
    return (chosen or names)[:limit]


def plot_curves(
    df: pd.DataFrame,
    metrics: Sequence[str],
    path: str | Path,
    window: int = 1,
    target: float | None = None,
    title: str = "learning curves",
    target_metrics: Sequence[str] | None = None,
) -> Path:
    """One panel per metric: raw points, the trailing ``window`` average, the phases shaded (when
    logged), and the target line with the step that first reached it (on ``target_metrics``, default
    all panels)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    if not metrics:
        raise ValueError("no metrics to plot")
    fig = Figure(figsize=(7.5, 2.6 * len(metrics) + 0.6), dpi=120)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(metrics), 1, squeeze=False, sharex=True)[:, 0]
    for ax, metric in zip(axes, metrics):
        series = metric_series(df, metric)
        shown_phases = []
        for start, end, phase in phase_spans(series):
            ax.axvspan(start, max(end, start + 0.5), color=PHASE_COLORS.get(phase, "#f0f0f0"), lw=0, zorder=0)
            if phase not in shown_phases:
                shown_phases.append(phase)
        ax.plot(series["step"], series["value"], marker="o", ms=3, lw=0.8, alpha=0.5, label="raw")
        if window > 1:
            ax.plot(series["step"], smooth(series["value"].tolist(), window), lw=2, label=f"mean of last {window}")
        if target is not None and (target_metrics is None or metric in target_metrics):
            ax.axhline(target, color="crimson", ls="--", lw=1, label=f"target {target:g}")
            finite = series[np.isfinite(series["value"])]
            hit = iterations_to_target(finite["step"].tolist(), finite["value"].tolist(), target, window)
            if hit is not None:
                ax.axvline(hit, color="crimson", lw=1)
                ax.annotate(f"reached at step {hit}", (hit, target), textcoords="offset points", xytext=(4, 4),
                            fontsize=7, color="crimson")
        handles, labels = ax.get_legend_handles_labels()
        handles += [Patch(color=PHASE_COLORS.get(p, "#f0f0f0"), label=f"phase {p}") for p in shown_phases]
        ax.legend(handles=handles, fontsize=7, loc="best")
        ax.set_ylabel(metric, fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("training step")
    fig.suptitle(title, fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    return path
