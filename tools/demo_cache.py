"""What the region_describer's description cache did in a demo run (tools/demo.py): the regions it served, the
describer time spent on the others and an estimate of the time saved."""


def cache_summary(frames: list[dict]) -> dict:
    """What the description cache served in these frames, and the describer time it spent and saved. The saving is
    an estimate: each cached region at the mean describer ms per freshly described region of the same frames."""
    regions = [region for frame in frames for region in frame["regions"]]
    cached = sum(region["cached"] for region in regions)
    spent_ms = sum(frame["inference_ms"] for frame in frames)
    per_region_ms = spent_ms / (len(regions) - cached) if len(regions) > cached else None
    return {"regions_cached": cached, "cached_share": round(cached / len(regions), 4) if regions else None,
            "describer_ms": round(spent_ms, 1),
            "describer_ms_per_fresh_region": None if per_region_ms is None else round(per_region_ms, 2),
            "describer_ms_saved_estimate": None if per_region_ms is None else round(cached * per_region_ms, 1)}


def cache_line(summary: dict) -> str:
    """The description cache's share of the regions, the describer's time and the node's CPU time."""
    cache = summary["cache"]
    line = (f"demo: the description cache served {cache['regions_cached']} of {summary['regions']} regions; "
            f"the describer ran {cache['describer_ms'] / 1e3:.1f} s")
    if cache["regions_cached"] and cache["describer_ms_saved_estimate"] is not None:
        line += (f", ~{cache['describer_ms_saved_estimate'] / 1e3:.1f} s less than without it (estimate: "
                 f"{cache['describer_ms_per_fresh_region']:.0f} ms per region)")
    return line + f"; the node used {summary['node_cpu_s']} s of CPU from the sensors' start to the drain"
