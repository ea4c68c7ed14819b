"""Building a bundle's TensorRT engines: cache keys, rebuild decisions, parity, engines.json.

build_engines() does the bookkeeping. Its calls into TensorRT (building a plan, running one) and into
ModelOpt (quantizing the LLM for int8 / int4) come in through a Toolchain: tensorrt_toolchain() is the
real one; tests hand in a double so that the bookkeeping is specified without TensorRT. Each graph's
build settings (export/trt_precision.py) go to the builder and into engines.json.

BUNDLE/engines/
  <graph>-<key[:16]>.plan   one engine per graph, named by its cache key (runtime/tensorrt_runner.py)
  timing.cache              TensorRT's layer timings, loaded before and saved after every build
  engines.json              graph -> file, key, sha256, profile, precision, parity error, build facts
"""
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from contract.manifest import Manifest, sha256
from export.trt_precision import build_settings, configure, network_flags
from export.trt_profiles import Profile, random_feeds
from export.trt_quantize import quantize_with_modelopt
from runtime.bundle import Bundle, BundleError
from runtime.tensorrt_runner import (ENGINES_DIR, ENGINES_FORMAT, ENGINES_MANIFEST, engine_key,
                                     read_engines_manifest)

TIMING_CACHE = "timing.cache"
# Max |TensorRT - ONNX Runtime| on random inputs, by the graph's engine precision. fp32 engines have TF32
# cleared, so 1e-3 absolute is fp32 against fp32 (summation order only). int8 / int4 engines are checked
# against the Q/DQ graph they were built from, which ONNX Runtime runs with the same quantized weights.
TOLERANCE = {"fp32": 1e-3, "fp16": 5e-2, "int8": 1e-1, "int4": 5e-2}


class ParityError(RuntimeError):
    """An engine whose outputs differ from ONNX Runtime's by more than the tolerance."""


@dataclass
class Toolchain:
    machine: dict  # runtime.tensorrt_runner.machine_identity()
    # (onnx path, profile shapes, build settings, workspace bytes, timing cache or None) -> (plan, timing cache)
    build: Callable[[Path, dict, dict, int, bytes | None], tuple[bytes, bytes]]
    # (plan, output names, graph name) -> a session with run(feeds) -> outputs
    open: Callable[[bytes, list[str], str], object]
    # (fp32 onnx path, Q/DQ onnx path to write, quantize recipe, calibration .npz or None, input names) -> None
    quantize: Callable[[Path, Path, dict, Path | None, list[str]], None] = quantize_with_modelopt


def tensorrt_toolchain(device: str = "cuda") -> Toolchain:
    from runtime.tensorrt_runner import EngineSession, machine_identity

    return Toolchain(machine_identity(device), build_engine,
                     lambda plan, outputs, name: EngineSession(plan, outputs, device, name))


def build_engine(onnx_path: Path, profile: dict, settings: dict, workspace_bytes: int,
                 timing_cache: bytes | None) -> tuple[bytes, bytes]:
    """Parse `onnx_path` and build a serialized engine with one optimization profile, as `settings` say."""
    import tensorrt as trt

    from runtime.tensorrt_runner import tensorrt_logger

    logger = tensorrt_logger()
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(settings, trt))  # explicit batch is TensorRT 10's only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {Path(onnx_path).name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    pinned = configure(config, network, settings, trt)
    if pinned:
        print(f"export.trt: {Path(onnx_path).stem}: {len(pinned)} of {network.num_layers} layers kept in fp32")
    optimization = builder.create_optimization_profile()
    for name, shapes in profile.items():
        optimization.set_shape(name, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(optimization)
    cache = config.create_timing_cache(timing_cache or b"")
    if not config.set_timing_cache(cache, False):  # a cache from another TensorRT or GPU: start afresh
        config.set_timing_cache(config.create_timing_cache(b""), False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT could not build an engine for {Path(onnx_path).name} (see its log above); "
                           "a larger --workspace may help")
    return bytes(plan), bytes(config.get_timing_cache().serialize())


def rebuild_reason(entry: dict | None, key: str, engines_dir: Path, settings: dict | None = None) -> str | None:
    """Why the engine must be built, or None where the recorded one can be kept."""
    if entry is None:
        return "no engine yet"
    if entry["key"] != key:
        return "key changed"
    if settings is not None and entry.get("build") != settings:  # e.g. built before TF32 was cleared
        return "build settings changed"
    path = engines_dir / entry["file"]
    if not path.is_file():
        return "engine file missing"
    if sha256(path) != entry["sha256"]:
        return "engine file changed"
    return None


def parity_error(manifest: Manifest, graph: str, onnx_path: Path, session, profile: Profile, seed: int = 0) -> float:
    """Largest |engine - ONNX Runtime| over the profile's check shapes, on the same random inputs."""
    import onnxruntime

    reference = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    error = 0.0
    for sizes in profile.checks:
        feeds = random_feeds(manifest, graph, sizes, rng)
        for ours, theirs in zip(session.run(feeds), reference.run(None, feeds)):
            if ours.shape != theirs.shape:
                raise ParityError(f"graph {graph}: engine output shape {ours.shape} differs from ONNX Runtime's "
                                  f"{theirs.shape} at {sizes}")
            # Float outputs only: the llm graph's top_ids follow from its top_log_probs, which are compared,
            # and near-equal candidates may legitimately swap in fp16.
            if ours.size and np.issubdtype(theirs.dtype, np.floating):
                error = max(error, float(np.abs(ours.astype(np.float64) - theirs).max()))
    return error


def build_engines(bundle: Bundle, profiles: dict[str, Profile], precision: str, workspace_bytes: int,
                  toolchain: Toolchain, tolerance: float | None = None, show_progress: bool = True,
                  calibration: Path | None = None) -> list:
    """Build (or keep) every graph's engine for a `precision` build; return the closing table's rows.

    Each graph gets its own settings (build_settings): in an fp16 build the Q-Former stays fp32, in an
    int8 / int4 build only the LLM is quantized. engines.json is rewritten after each engine, so an
    interrupted run keeps what it finished.
    """
    calibration_sha256 = sha256(calibration) if calibration else None
    engines_dir = bundle.path / ENGINES_DIR
    engines_dir.mkdir(exist_ok=True)
    try:
        previous = read_engines_manifest(bundle.path) or {"graphs": {}}
    except BundleError:  # unreadable or of another format: rebuild everything, replacing it
        previous = {"graphs": {}}
    entries = {name: entry for name, entry in previous["graphs"].items() if name in profiles}
    rows = []
    bar = tqdm(profiles.items(), desc="tensorrt", unit="graph", disable=None if show_progress else True)
    for name, profile in bar:
        bar.set_postfix_str(name)
        settings = build_settings(name, precision, calibration_sha256)
        key = engine_key(toolchain.machine, settings["precision"], profile.to_json(),
                         bundle.manifest.graph_sha256(name))
        reason = rebuild_reason(entries.get(name), key, engines_dir, settings)
        if reason is None:
            entry = entries[name]
            rows.append((name, entry["precision"], entry["size_bytes"], entry["build_seconds"],
                         entry["parity_max_abs_diff"], "kept"))
            continue
        limit = TOLERANCE[settings["precision"]] if tolerance is None else tolerance
        entries[name] = _build(bundle, name, profile, settings, key, workspace_bytes, toolchain, limit, calibration)
        write_engines_manifest(bundle.path, entries)
        entry = entries[name]
        rows.append((name, entry["precision"], entry["size_bytes"], entry["build_seconds"],
                     entry["parity_max_abs_diff"], f"built ({reason})"))
    write_engines_manifest(bundle.path, entries)
    kept = {entry["file"] for entry in entries.values()} | {TIMING_CACHE, ENGINES_MANIFEST}
    for stale in engines_dir.glob("*.plan"):
        if stale.name not in kept:
            stale.unlink()
    return rows


def _build(bundle: Bundle, name: str, profile: Profile, settings: dict, key: str, workspace_bytes: int,
           toolchain: Toolchain, tolerance: float, calibration: Path | None) -> dict:
    """Build, check and write one engine; returns its engines.json entry."""
    graph = bundle.manifest.graphs[name]
    engines_dir = bundle.path / ENGINES_DIR
    cache_path = engines_dir / TIMING_CACHE
    inputs = [spec.name for spec in graph.inputs]
    # The Q/DQ graph is only needed to build and check the engine; at release size it is gigabytes.
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=engines_dir) as scratch:
        onnx_path = bundle.path / graph.file
        start = time.perf_counter()
        if settings["quantize"]:
            quantized = Path(scratch) / f"{name}.{settings['precision']}.onnx"
            toolchain.quantize(onnx_path, quantized, settings["quantize"], calibration, inputs)
            onnx_path = quantized
        timing_cache = cache_path.read_bytes() if cache_path.is_file() else None
        plan, timing_cache = toolchain.build(onnx_path, profile.to_json(), settings, workspace_bytes, timing_cache)
        seconds = time.perf_counter() - start
        _write_atomically(cache_path, timing_cache)
        session = toolchain.open(plan, [spec.name for spec in graph.outputs], name)
        error = parity_error(bundle.manifest, name, onnx_path, session, profile)
    if not error <= tolerance:  # NaN fails too
        raise ParityError(f"graph {name}: the {settings['precision']} engine differs from ONNX Runtime by "
                          f"{error:.2e} (> {tolerance:g}); try fp32, or pass --parity-tolerance if this is expected")
    file = f"{name}-{key[:16]}.plan"
    _write_atomically(engines_dir / file, plan)
    return {"file": file, "key": key, "sha256": sha256(engines_dir / file), "size_bytes": len(plan),
            "precision": settings["precision"], "build": settings, "profile": profile.to_json(),
            "axes": {axis: list(r) for axis, r in profile.axes.items()},
            **toolchain.machine, "workspace_bytes": workspace_bytes,
            "build_seconds": round(seconds, 3), "parity_max_abs_diff": error, "parity_tolerance": tolerance,
            "parity_reference": "ModelOpt Q/DQ graph" if settings["quantize"] else "bundle graph"}


def write_engines_manifest(bundle_path: Path, entries: dict) -> None:
    manifest = {"format": ENGINES_FORMAT, "timing_cache": TIMING_CACHE, "graphs": dict(sorted(entries.items()))}
    _write_atomically(Path(bundle_path) / ENGINES_DIR / ENGINES_MANIFEST,
                      (json.dumps(manifest, indent=2) + "\n").encode())


def _write_atomically(path: Path, data: bytes) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.chmod(temporary, 0o644)  # mkstemp makes it private; the runtime may run as another user
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def format_table(rows: list) -> str:
    lines = [f"{'graph':<28}{'precision':>10}{'engine MB':>10}{'build s':>9}{'max |trt-ort|':>15}  status"]
    lines += [f"{name:<28}{precision:>10}{size / 2**20:>10.2f}{seconds:>9.1f}{error:>15.2e}  {status}"
              for name, precision, size, seconds, error, status in rows]
    return "\n".join(lines)
