"""The learning report: McNemar's exact test by hand, pairing of validations level by level, the PNG."""

from __future__ import annotations

import json

import pytest

from himac_verl.eval.episode_log import EpisodeRecord, write_episodes
from himac_verl.eval.learning import (
    mcnemar_exact_p,
    paired_comparison,
    success_by_step,
    write_learning_report,
)


def test_mcnemar_exact_by_hand():
    # n = 12 discordant pairs, 10 one way: 2 * (C(12,0) + C(12,1) + C(12,2)) / 2^12 = 2 * 79 / 4096
    assert mcnemar_exact_p(10, 2) == pytest.approx(2 * 79 / 4096)
    assert mcnemar_exact_p(2, 10) == mcnemar_exact_p(10, 2)
    assert mcnemar_exact_p(0, 0) == 1.0 and mcnemar_exact_p(3, 3) == 1.0
    assert mcnemar_exact_p(6, 0) == pytest.approx(2 / 64)  # 0.03125
    with pytest.raises(ValueError, match="b=-1"):
        mcnemar_exact_p(-1, 2)


def record(task: int, step: int, won: bool) -> EpisodeRecord:
    return EpisodeRecord.build(env="sokoban", split="test", task_id=str(task), task_type="sokoban", method="himac",
                               model="m", seed=0, actions=["up"], rewards=[10.0 if won else -0.1], won=won,
                               score=1.0 if won else 0.0, extra={"global_step": step})


def test_paired_comparison_counts_discordant_levels(tmp_path):
    before = [True] * 3 + [False] * 7  # levels 0-9: 3 won before
    after = [True, False, True] + [True] * 5 + [False] * 2  # level 1 lost; levels 3-7 newly won
    middle = [True] * 4  # an intermediate validation on the first 4 levels only
    records = ([record(i, 0, w) for i, w in enumerate(before)] + [record(i, 5, w) for i, w in enumerate(middle)]
               + [record(i, 10, w) for i, w in enumerate(after)])
    cmp = paired_comparison(records)
    assert (cmp.step_before, cmp.step_after, cmp.n, cmp.b, cmp.c) == (0, 10, 10, 5, 1)
    assert (cmp.before.wins, cmp.after.wins) == (3, 7)
    assert cmp.p_value == pytest.approx(mcnemar_exact_p(5, 1))
    assert "0.300" in cmp.line() and "0.700" in cmp.line() and "5 newly solved, 1 lost" in cmp.line()
    assert [(p.step, p.n, p.wins) for p in success_by_step(records)] == [(0, 10, 3), (5, 4, 4), (10, 10, 7)]

    log = write_episodes(tmp_path / "episodes.jsonl", records)
    metrics = tmp_path / "metrics.jsonl"
    lines = [{"run_facts": {}}] + [{"step": s, "phase": "macro" if s <= 5 else "micro",
                                    "himac/success/micro": 0.1 * s} for s in range(1, 11)]
    metrics.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    report = write_learning_report(log, metrics, tmp_path / "out", title="t")
    assert (tmp_path / "out" / "learning.png").stat().st_size > 10_000
    saved = json.loads((tmp_path / "out" / "learning.json").read_text())
    assert saved["paired"]["b"] == 5 and saved["phases"][0] == [1, "macro"]
    assert report["train"]["himac/success/micro"][-1] == [10, 1.0]


def test_a_single_validation_or_unstepped_log_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="two validations"):
        paired_comparison([record(0, 0, True)])
    unstepped = EpisodeRecord.build(env="sokoban", split="test", task_id="0", task_type="sokoban", method="himac",
                                    model="m", seed=0, actions=[], rewards=[], won=False, score=0.0)
    with pytest.raises(ValueError, match="global_step"):
        paired_comparison([unstepped, unstepped])
