"""Helpers for running our trainer several times in one Ray session (the tests and
``benchmarks/bench_learning.py`` share them): compose the config as ``python -m himac_verl.main`` would,
wait for verl's named actors to go between runs, read the JSONL metrics sink back."""

from __future__ import annotations

import json
import time
from pathlib import Path


def compose_config(overrides: list[str]):
    """Our trainer config (``himac_trainer`` + overrides), as ``python -m himac_verl.main`` would see it."""
    from himac_verl.trainer.validate import compose

    return compose(overrides)


def _live_placement_groups() -> list[str]:
    import ray

    table = ray.util.placement_group_table()
    return [pg.get("name", pg_id) for pg_id, pg in table.items() if pg.get("state") != "REMOVED"]


def wait_named_actors_gone(timeout_s: float = 60.0) -> None:
    """verl's actors and placement groups die asynchronously with their TaskRunner; the next run in the
    same Ray session reuses their names, so wait until they are gone."""
    import ray

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if not ray.util.list_named_actors(all_namespaces=True) and not _live_placement_groups():
            return
        time.sleep(0.5)
    raise TimeoutError(f"still alive: actors {ray.util.list_named_actors(all_namespaces=True)}, "
                       f"placement groups {_live_placement_groups()}")


def read_metrics(path) -> tuple[dict, list[dict]]:
    """(run facts, per-step metric dicts) from our trainer's JSONL sink (``himac.metrics_file``)."""
    facts, steps = {}, []
    for line in Path(path).read_text().splitlines():
        record = json.loads(line)
        if "run_facts" in record:
            facts = record["run_facts"]
        else:
            steps.append(record)
    return facts, steps
