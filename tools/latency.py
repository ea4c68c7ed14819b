"""Latency percentiles as the tools report them: p50, p90 and p99 in ms, rounded to 0.1 (None without samples)."""
import numpy as np

PERCENTILES = (50, 90, 99)


def percentiles_ms(milliseconds: list[float]) -> dict[str, float | None]:
    if not milliseconds:
        return {f"p{p}": None for p in PERCENTILES}
    return {f"p{p}": round(float(v), 1) for p, v in zip(PERCENTILES, np.percentile(milliseconds, PERCENTILES))}
