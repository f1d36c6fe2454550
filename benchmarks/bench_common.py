"""What the benchmarks that run verl's trainer share: one Ray start-up in CPU mode for all their runs."""

from __future__ import annotations

import os
import time


def start_ray(gpus: int = 1) -> None:
    """Start Ray once in CPU mode (declared GPUs for verl's worker groups); retried once, since another
    process may be starting Ray on this box at the same moment."""
    import ray

    from himac_verl import cpu

    cpu.enable()
    for attempt in (1, 2):
        try:
            ray.init(num_cpus=16, num_gpus=gpus, include_dashboard=False,
                     runtime_env={"env_vars": cpu.ray_env_vars()},
                     log_to_driver=os.environ.get("HIMAC_BENCH_RAY_LOGS", "0") == "1")
            return
        except Exception as exc:  # noqa: BLE001 - retried once, then raised
            if attempt == 2:
                raise
            print(f"Ray start-up failed ({exc!r}); retrying once", flush=True)
            ray.shutdown()
            time.sleep(5)
