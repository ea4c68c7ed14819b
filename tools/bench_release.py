"""python -m tools.bench_release --workdir DIR [--preset blip2-opt-2.7b] [--variants fp32 fp16 int8 int4]  ->  JSON

The release-size run: a RegionBLIP at the released dimensions (EVA ViT-g/14, bert-base Q-Former, OPT-2.7B; random
weights, as no hub is reachable here) exported to each bundle variant and described on this machine. Per variant:
  export     `python -m export.onnx` in a process of its own: wall time, its peak RSS (the kernel's count for that
             process alone, os.wait4), the bundle's bytes on disk
  describe   a fresh process loads the bundle (ONNX Runtime CPU) and times the vision graph on one frame, the
             image-region Q-Former on --regions boxes (per region), a decode step of the llm graph at batch 1 and
             at --regions rows (each row with a 34-token cache), and one whole frame of --regions regions at
             --tokens tokens; then its peak RSS
  bound      each decode step against its read bound: the bytes the step must read (the llm graph's initializers,
             as stored: fp32, fp16 or packed int8/int4 with their scales, plus the KV cache) ÷ the read bandwidth
             of numpy .max() over 1 GiB measured in the same process (tools/bench_runtime.py's read_bandwidth; memcpy
             would count each byte twice): a release-size LLM's gigabytes come from memory, not from a cache
The checkpoint and each bundle are kept in DIR and reused by a later run (their export figures with them, in
DIR/<variant>.export.json), so a run that stopped part-way resumes. Delete DIR/<variant> to export it again.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from contract.cli import OneLineParser
from export.quantize import QUANTIZE

ROOT = Path(__file__).resolve().parents[1]
PROG = "python -m tools.bench_release"
READ_BYTES = 2**30  # the read probe's buffer: more than 3x the 300 MiB L3 of the machine the README's numbers come from
VARIANTS = {"fp32": [], "fp16": ["--precision", "fp16"], **{variant: ["--quantize", variant] for variant in QUANTIZE}}
DEFINITIONS = {
    "export.seconds, export.peak_rss_gb": "wall time and peak resident memory (GiB) of the export process alone",
    "bundle_gb": "bytes of the bundle's files on disk, GiB",
    "describe.load_s, rss_after_load_gb": "Describer.from_bundle wall time, and the process's resident memory "
                                          "after it (GiB): against bundle_gb, whether weights are held twice",
    "describe.vision_ms": "median ms of the vision graph on one frame at the bundle's image size (3 calls after "
                          "a warm-up)",
    "describe.qformer_ms_per_region": "median ms of qformer_image_region on --regions boxes of one frame ÷ regions",
    "describe.batch_*.decode_ms_per_step": "median ms of one llm-graph call with that many rows (34-token cache)",
    "describe.batch_*.read_bound_ms": "(llm initializer bytes + that step's KV-cache bytes) ÷ read_gb_per_s",
    "describe.batch_*.decode_vs_read_bound": "decode_ms_per_step ÷ read_bound_ms (1 = at the bound)",
    "describe.read_gb_per_s": "GB/s (1e9) of numpy float32 .max() over 1 GiB, best of 5, the faster of 1 thread "
                              "and all cores",
    "describe.frame_ms": "one describe_image_regions call: --regions boxes, exactly --tokens tokens each",
    "describe.peak_rss_gb": "the describe process's peak resident memory, GiB",
}


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_measured(command: list[str], log: Path) -> dict:
    """Run `command` from the repository root, its output to `log`: wall seconds and that process's peak RSS."""
    start = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{PROG}: {' '.join(command[2:4])} failed (exit {process.returncode}); see {log}:\n"
                         + log.read_text()[-1500:])
    return {"seconds": time.perf_counter() - start, "peak_rss_gb": usage.ru_maxrss / 2**20}


def directory_gb(path: Path) -> float:
    return sum(file.stat().st_size for file in path.iterdir() if file.is_file()) / 2**30


def ensure_checkpoint(workdir: Path, preset: str) -> dict | None:
    checkpoint = workdir / "checkpoint"
    if (checkpoint / "model.safetensors").is_file():
        return None
    return run_measured([sys.executable, "-m", "tools.random_checkpoint", "--preset", preset, "--out",
                         str(checkpoint)], workdir / "checkpoint.log")


def ensure_bundle(workdir: Path, variant: str) -> dict:
    record = workdir / f"{variant}.export.json"
    if (workdir / variant / "manifest.json").is_file() and record.is_file():
        return json.loads(record.read_text()) | {"reused": True}
    measured = run_measured([sys.executable, "-m", "export.onnx", "--ckpt", str(workdir / "checkpoint"),
                             "--out", str(workdir / variant), *VARIANTS[variant]], workdir / f"{variant}.export.log")
    measured["bundle_gb"] = directory_gb(workdir / variant)
    record.write_text(json.dumps(measured))
    return measured


def run_describe(workdir: Path, variant: str, args) -> dict:
    command = [sys.executable, "-m", "tools.bench_release", "--worker", "--workdir", str(workdir), "--variants",
               variant, "--regions", str(args.regions), "--tokens", str(args.tokens), "--steps", str(args.steps)]
    command += ["--threads", str(args.threads)] if args.threads else []
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"{PROG}: describing the {variant} bundle failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---- the describe worker (a process of its own per variant) ---------------------------------------------------

def median_ms(call, repeats: int) -> float:
    call()  # warm-up: first-call allocations and thread start-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def describe_worker(workdir: Path, variant: str, args) -> dict:
    from runtime.describer import Describer
    from tools.bench_runtime import PREFIX_LENGTH, decode_step_ms, frames_and_boxes, llm_graph_sizes, read_bandwidth

    read = max(read_bandwidth(count, READ_BYTES) for count in dict.fromkeys([1, os.cpu_count()]))
    bundle = workdir / variant
    start = time.perf_counter()
    describer = Describer.from_bundle(bundle, threads=args.threads)
    load_s = time.perf_counter() - start
    rss_after_load = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30
    engine, manifest = describer.engine, describer.engine.bundle.manifest
    size = manifest.preprocess.image_size
    pixels = np.random.default_rng(0).normal(size=(1, 3, size, size)).astype(np.float32)
    features = engine.features("image_region", pixels)
    boxes = np.sort(np.random.default_rng(1).uniform(0, 1, (args.regions, 2, 2)), axis=1).reshape(-1, 4)
    frame_index = np.zeros(args.regions, np.int64)
    result = {
        "variant": variant, "precision": manifest.precision, "load_s": load_s, "rss_after_load_gb": rss_after_load,
        "read_gb_per_s": read / 1e9,
        "vision_ms": median_ms(lambda: engine.features("image_region", pixels), 3),
        "qformer_ms_per_region": median_ms(lambda: engine.soft_prompt("image_region", features, boxes, frame_index),
                                           3) / args.regions,
    }
    weights = llm_graph_sizes(bundle)["weights_bytes"]
    layout = manifest.llm
    for rows in dict.fromkeys([1, args.regions]):
        kv = 2 * layout.num_layers * rows * layout.num_heads * (PREFIX_LENGTH + 1) * layout.head_dim * 4
        bound = 1e3 * (weights + kv) / read
        step = decode_step_ms(describer, rows, args.steps)
        result[f"batch_{rows}"] = {"decode_ms_per_step": step, "bytes_read_per_step": weights + kv,
                                   "read_bound_ms": bound, "decode_vs_read_bound": step / bound}
    frames, frame_boxes = frames_and_boxes(1, args.regions)
    describer.configure(num_beams=1, max_new_tokens=args.tokens, min_new_tokens=args.tokens)
    start = time.perf_counter()
    described = describer.describe_image_regions(frames[0], frame_boxes)
    result["frame_ms"] = 1e3 * (time.perf_counter() - start)
    result["frame_tokens"] = [list(d.token_ids) for d in described]
    result["peak_rss_gb"] = peak_rss_gb()
    return result


def agreement(tokens: list, reference: list) -> float:
    return sum(a == b for a, b in zip(tokens, reference, strict=True)) / len(reference)


def run(args) -> dict:
    workdir = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    checkpoint = ensure_checkpoint(workdir, args.preset)
    variants = {}
    for variant in args.variants:
        load = os.getloadavg()[0]
        export = ensure_bundle(workdir, variant)
        variants[variant] = {"export": export, "describe": run_describe(workdir, variant, args),
                             "load_average_1min": [load, os.getloadavg()[0]]}
    if "fp32" in variants:
        reference = variants["fp32"]["describe"]["frame_tokens"]
        for result in variants.values():
            result["describe"]["greedy_token_agreement_with_fp32"] = agreement(result["describe"]["frame_tokens"],
                                                                               reference)
    for result in variants.values():
        del result["describe"]["frame_tokens"]
    summary = {variant: {"export_s": r["export"]["seconds"], "export_peak_rss_gb": r["export"]["peak_rss_gb"],
                         "bundle_gb": r["export"]["bundle_gb"], "describe_peak_rss_gb": r["describe"]["peak_rss_gb"],
                         "vision_ms": r["describe"]["vision_ms"],
                         "qformer_ms_per_region": r["describe"]["qformer_ms_per_region"],
                         **{f"decode_ms_batch_{rows}": r["describe"][f"batch_{rows}"]["decode_ms_per_step"]
                            for rows in dict.fromkeys([1, args.regions])},
                         "decode_vs_read_bound_batch_1": r["describe"]["batch_1"]["decode_vs_read_bound"]}
               for variant, r in variants.items()}
    if "fp32" in summary:
        for row in summary.values():
            row["decode_speedup_vs_fp32_batch_1"] = summary["fp32"]["decode_ms_batch_1"] / row["decode_ms_batch_1"]
    return {"preset": args.preset, "regions": args.regions, "tokens": args.tokens, "cpu_count": os.cpu_count(),
            "memory_gb": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30,
            "checkpoint": checkpoint or "reused", "summary": summary, "variants": variants,
            "definitions": DEFINITIONS}


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, type=Path, help="where the checkpoint and bundles are kept")
    parser.add_argument("--preset", default="blip2-opt-2.7b", help="model size preset (default blip2-opt-2.7b)")
    parser.add_argument("--variants", nargs="+", choices=tuple(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--regions", type=int, default=16, help="regions per frame (default 16)")
    parser.add_argument("--tokens", type=int, default=8, help="tokens per region in the whole-frame run (default 8)")
    parser.add_argument("--steps", type=int, default=5, help="decode steps timed at each batch (default 5)")
    parser.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: all cores)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    try:
        args = parser.parse_args(argv)
        if min(args.regions, args.tokens, args.steps) < 1:
            parser.error("--regions, --tokens and --steps must be at least 1")
        from training.config import PRESETS

        if args.preset not in PRESETS:
            parser.error(f"unknown preset {args.preset!r}: choose one of {', '.join(sorted(PRESETS))}")
    except ValueError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 2
    if args.worker:
        result = describe_worker(args.workdir, args.variants[0], args)
    else:
        result = run(args)
    print(json.dumps(result, indent=None if args.worker else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
