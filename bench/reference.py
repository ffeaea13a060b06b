"""The fixed CPU workload the benchmarks time beside their own (machine-independent ratios).

This machine's speed drifts by up to 1.5x within seconds, so each benchmark times this workload
just before each of its runs and reports its figures also as a ratio to it.
"""

from __future__ import annotations

import time

import torch


def reference_workload() -> float:
    """Seconds for a fixed mix of CPU tensor work (about what one rendered view costs)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1_000_000, generator=g)
    idx = torch.randint(0, x.numel(), (1_000_000,), generator=g)
    a = torch.rand(256, 256, generator=g)
    t0 = time.perf_counter()
    for _ in range(5):
        y = x * 1.5 + 0.25
        y = torch.where(y > 1.0, y - 1.0, y).sqrt()
        y = y.index_select(0, idx)
        _ = (a @ a).sum() + y.sum()
    return time.perf_counter() - t0
