"""What a person watching a run sees: one progress line per step, a final summary and a PNG of the curves.

verl's console logger prints every metric of a step (hundreds of keys); :func:`progress_line` prints the
few that tell how the run goes (step, phase, success, reward, seconds per step). At the end of ``fit``,
:func:`write_summary` reads the run's metrics JSONL (``himac.metrics_file``) and writes ``summary.json``
and ``curves.png`` beside it, and prints the summary.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from himac_verl.core.contract import PHASE_CODES

PHASE_NAMES = {code: name for name, code in PHASE_CODES.items()}

# (label, metric keys tried in order): the first present key is shown.
PROGRESS_FIELDS: list[tuple[str, tuple[str, ...]]] = [
    ("success A", ("himac/success/macro",)),
    ("success B", ("himac/success/micro",)),
    ("success", ("himac/success/flat",)),
    ("return", ("himac/return/micro", "himac/return/macro", "himac/return/flat")),
    ("score", ("critic/score/mean",)),  # verl's reward score (the built-in task's reward)
    ("adv macro", ("himac/adv/macro/max",)),
    ("adv micro", ("himac/adv/micro/max",)),
    ("grad", ("actor/grad_norm",)),
    ("s/step", ("timing_s/step",)),
]

CURVE_METRICS = [
    "himac/success/macro",
    "himac/success/micro",
    "himac/success/flat",
    "himac/return/macro",
    "himac/return/micro",
    "himac/return/flat",
    "critic/score/mean",
    "actor/grad_norm",
    "timing_s/step",
]


def _num(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def progress_line(step: int, total: int, metrics: dict[str, Any]) -> str:
    """``[himac] step 2/4 phase=micro success B=0.50 return=-1.20 ... s/step=95.1``."""
    parts = [f"[himac] step {step}/{total}"]
    phase = _num(metrics.get("himac/phase"))
    if phase is not None:
        parts.append(f"phase={PHASE_NAMES.get(int(phase), phase)}")
    for label, keys in PROGRESS_FIELDS:
        for key in keys:
            value = _num(metrics.get(key))
            if value is not None:
                parts.append(f"{label}={value:.2f}" if label != "s/step" else f"{label}={value:.1f}")
                break
    return " ".join(parts)


def write_summary(metrics_file: str | Path) -> dict[str, Any]:
    """Summarise a finished run from its metrics JSONL; write summary.json and curves.png beside it."""
    from himac_verl.eval.curves import plot_curves, read_metrics_jsonl

    path = Path(metrics_file)
    steps = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    steps = [s for s in steps if "step" in s]
    if not steps:
        raise ValueError(f"{path}: no step records to summarise")
    first, last = steps[0], steps[-1]
    phases = sorted({PHASE_NAMES.get(int(s["himac/phase"]), "?") for s in steps if _num(s.get("himac/phase")) is not None})
    seconds = [_num(s.get("timing_s/step")) for s in steps]
    summary: dict[str, Any] = {
        "steps": [int(first["step"]), int(last["step"])],
        "phases_run": phases,
        "seconds_total": round(sum(x for x in seconds if x is not None), 1),
        "seconds_per_step": round(sum(x for x in seconds if x is not None) / max(1, len(steps)), 1),
        "failed_groups": int(sum(_num(s.get("himac/failed_groups")) or 0 for s in steps)),
        "first": {k: first[k] for k in CURVE_METRICS if _num(first.get(k)) is not None},
        "last": {k: last[k] for k in CURVE_METRICS if _num(last.get(k)) is not None},
    }
    (path.parent / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    df = read_metrics_jsonl(path)
    shown = [m for m in CURVE_METRICS if m in set(df["metric"])]
    if shown:
        png = plot_curves(df, shown, path.parent / "curves.png")
        summary["curves_png"] = str(png)
    return summary
