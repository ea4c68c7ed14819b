"""python -m tools.gpu_check [--device cuda] [--out FILE]  ->  JSON on stdout (and in FILE, section by section)

The one prepared measurement of the torch backend on a GPU (issue 17), with random weights (no hub is reachable;
speed does not depend on the values):
  describer      ms/frame and ROIs/s of the torch backend's default on the device (CUDA: static KV cache, fp16,
                 decode step in a CUDA graph) at --preset with --regions boxes per 480x640 frame
  decode         ms/token at batch 1 and --regions, CUDA graph vs eager, at --preset
  release        ms/token at batch 1 and --regions with the LLM of --release-preset, built in --precision directly
                 on the device (no checkpoint written), next to the read bound: its weight bytes / the measured
                 memory read bandwidth
  agreement      greedy tokens of fp16 and bf16 vs fp32, and of the static decoder vs transformers' generate (fp32)
  tensorrt, onnxruntime_cuda   the same describer figures over an exported bundle, only where the package is
                 importable (else why not)
Every description is exactly --tokens tokens long (min = max new tokens), so the figures compare the same work. Each
section runs on its own: one that fails records its error and the others still run; FILE is rewritten after each.
With --device cpu the defaults shrink to the tiny preset and a few tokens, so its structure runs in seconds in the
tests. TF32 is turned off: fp32 means fp32. The JSON's "definitions" says what each number is.
"""
import json
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

from contract.cli import OneLineParser

FRAME_SIZE = (480, 640)
ADAPTER = "image_region"  # the modality the describer decodes: its LoRA adapter is active in every timed step
# (preset, release preset, regions, tokens, frames, warmup, repeats, bandwidth buffer MiB) per device
DEFAULTS = {"cuda": ("bench", "blip2-opt-2.7b", 16, 20, 4, 3, 10, 4096),
            "cpu": ("tiny", "tiny", 4, 4, 2, 1, 3, 64)}
DEFINITIONS = {
    "median, min, max": "over `repeats` timed runs after `warmup` untimed ones; `timer` says how each was timed "
                        "(cuda events on the device's stream, or perf_counter around work that ends in a host copy)",
    "memory_bandwidth.read_gb_per_s": "the faster of: a device-to-device copy of buffer_mib (bytes read + written "
                                      "per second, copy_gb_per_s) and a sum over it (bytes read, sum_gb_per_s); 1e9",
    "describer.ms_per_frame": "Describer.describe_image_regions on one frame with `regions` boxes, end to end "
                              "(preprocess, ViT, Q-Former, `tokens` greedy decode steps, token ids to the host)",
    "describer.rois_per_s": "regions / median ms_per_frame",
    "describer_transformers_fp32": "the same through the torch backend's reference decoder (transformers' generate, "
                                   "fp32, eager): what the torch backend did before the static decoder",
    "*.ms_per_token": "one decode step as the describer runs it: token ids up, the step, the best token down, "
                      "timed over tokens - 1 steps after an untimed prefill, per step",
    "*.device_ms_per_token": "the step alone, run back to back on the device with no host copy (graph replays, "
                             "or the eager step's kernels), cuda events, per step",
    "decode.graph_speedup": "eager ms_per_token / graph ms_per_token at that batch",
    "release.weight_bytes": "bytes of the LLM's weights a step reads: every parameter once (the tied lm_head "
                            "counted once, LoRA included) but the position table, of which it reads one row",
    "release.read_bound_ms": "weight_bytes / memory_bandwidth.read_gb_per_s; with_kv_cache adds the static "
                             "cache a step reads (all max_length positions, masked)",
    "release.*.vs_read_bound": "device_ms_per_token / read_bound_ms (1 = at the bound)",
    "agreement.sequences": "fraction of regions whose greedy token ids are identical to the fp32 static decoder's",
    "agreement.tokens": "mean over regions of the length of the common prefix / tokens",
}


def stats(values_ms: list[float], warmup: int, timer: str) -> dict:
    return {"median": float(np.median(values_ms)), "min": float(np.min(values_ms)), "max": float(np.max(values_ms)),
            "warmup": warmup, "repeats": len(values_ms), "timer": timer}


class Clock:
    """CUDA events on a CUDA device (no host sync inside the timed span), perf_counter elsewhere."""

    def __init__(self, torch, device: str):
        self.torch, self.cuda = torch, torch.device(device).type == "cuda"
        self.name = "cuda events" if self.cuda else "perf_counter"

    def time_ms(self, work) -> float:
        if not self.cuda:
            start = time.perf_counter()
            work()
            return 1e3 * (time.perf_counter() - start)
        start, end = self.torch.cuda.Event(enable_timing=True), self.torch.cuda.Event(enable_timing=True)
        self.torch.cuda.synchronize()
        start.record()
        work()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)

    def repeat(self, work, warmup: int, repeats: int, per: int = 1) -> dict:
        for _ in range(warmup):
            work()
        return stats([self.time_ms(work) / per for _ in range(repeats)], warmup, self.name)


def environment(torch, device: str) -> dict:
    import transformers

    found = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
             "device": device, "tf32": False}
    if torch.device(device).type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        found.update(gpu=properties.name, memory_gib=round(properties.total_memory / 2**30, 1),
                     capability=f"{properties.major}.{properties.minor}", cuda=torch.version.cuda)
    return found


def memory_bandwidth(torch, clock: Clock, device: str, buffer_mib: int, warmup: int, repeats: int) -> dict:
    source = torch.ones(buffer_mib * 2**20 // 4, dtype=torch.float32, device=device)
    target = torch.empty_like(source)
    copy = clock.repeat(lambda: target.copy_(source), warmup, repeats)
    total = clock.repeat(lambda: source.sum(), warmup, repeats)
    copy_rate, sum_rate = 2 * source.nbytes / copy["min"] / 1e6, source.nbytes / total["min"] / 1e6
    return {"buffer_mib": buffer_mib, "copy_ms": copy, "sum_ms": total, "copy_gb_per_s": copy_rate,
            "sum_gb_per_s": sum_rate, "read_gb_per_s": max(copy_rate, sum_rate), "rate_from": "min"}


def frames_and_boxes(count: int, regions: int, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 256, (*FRAME_SIZE, 3), dtype=np.uint8) for _ in range(count)]
    height, width = FRAME_SIZE
    sizes = rng.uniform(40, 240, (regions, 2))
    corners = rng.uniform(0, 1, (regions, 2)) * ([width, height] - sizes)
    return frames, np.concatenate([corners, corners + sizes], axis=1)


def describer_figures(describer, frames, boxes, tokens: int, warmup: int, repeats: int) -> dict:
    describer.configure(num_beams=1, max_new_tokens=tokens, min_new_tokens=tokens)
    times = []
    for index in range(warmup + repeats):
        start = time.perf_counter()
        described = describer.describe_image_regions(frames[index % len(frames)], boxes)
        times.append(1e3 * (time.perf_counter() - start))
        if any(d.problem for d in described) or any(len(d.token_ids) != tokens for d in described):
            raise RuntimeError(f"a region was not described with {tokens} tokens: {described[0]}")
    ms = stats(times[warmup:], warmup, "perf_counter")
    return {"regions": len(boxes), "tokens": tokens, "frame_size": list(FRAME_SIZE), "ms_per_frame": ms,
            "rois_per_s": len(boxes) / ms["median"] * 1e3}


def engine_summary(engine) -> dict:
    return {"decoder": engine.decoder, "precision": engine.precision, "cuda_graphs": engine.cuda_graphs}


def decode_figures(torch, clock, language_model, rows: int, tokens: int, graphs: bool, warmup: int,
                   repeats: int, prompt_length: int) -> dict:
    """ms_per_token (the step as decoding runs it) and device_ms_per_token (the step alone, back to back)."""
    from runtime.torch_decoder import StaticDecoder

    decoder = StaticDecoder(language_model, cuda_graphs=graphs)
    step = decoder.step(prompt_length + 1 + tokens, ADAPTER)
    width = language_model.get_input_embeddings().weight.shape[1]
    prompt = np.random.default_rng(0).normal(scale=0.5, size=(rows, prompt_length, width)).astype(np.float32)
    bias, bos = np.zeros(step.vocab_size, np.float32), np.full((rows, 1), 2, np.int64)
    per_step = []
    for _ in range(warmup + repeats):
        _, ids, cache = step.top_tokens(prompt, bos, None, bias, 1)
        start = time.perf_counter()
        for _ in range(tokens - 1):
            _, ids, cache = step.top_tokens(prompt[:, :0], ids, cache, bias, 1)
        per_step.append(1e3 * (time.perf_counter() - start) / (tokens - 1))
    if graphs:
        graph, _ = decoder.graph(cache, ADAPTER, 1)
        replay = graph.replay
    else:
        def replay():
            decoder.decode_step(cache, 1)
    device_only = clock.repeat(lambda: [replay() for _ in range(tokens - 1)], warmup, repeats, per=tokens - 1)
    return {"rows": rows, "cuda_graphs": graphs, "ms_per_token": stats(per_step[warmup:], warmup, "perf_counter"),
            "device_ms_per_token": device_only, "kv_cache_bytes": cache.nbytes}


def attempt(work) -> dict:
    """work()'s figures, or its error: one failed measurement must not lose the others'."""
    try:
        return work()
    except Exception as error:
        return {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc().splitlines()[-6:]}


def graph_and_eager(torch, clock, language_model, args, prompt_length: int, graphs_possible: bool,
                    more=lambda figures: figures) -> dict:
    """decode_figures at batch 1 and --regions, with and without CUDA graphs; `more` adds to each batch's."""
    found = {}
    for name, graphs in (("graph", True), ("eager", False)):
        if graphs and not graphs_possible:
            found[name] = {"absent": "CUDA graphs need a CUDA device"}
            continue
        found[name] = {f"batch_{rows}": attempt(lambda: more(decode_figures(
            torch, clock, language_model, rows, args.tokens, graphs, args.warmup, args.repeats, prompt_length)))
            for rows in (1, args.regions)}
    if graphs_possible:
        found["graph_speedup"] = {
            batch: found["eager"][batch]["ms_per_token"]["median"] / figures["ms_per_token"]["median"]
            for batch, figures in found["graph"].items()
            if "ms_per_token" in figures and "ms_per_token" in found["eager"][batch]}
    return found


def decode_section(torch, clock, describer, args, graphs_possible: bool) -> dict:
    model = describer.engine.model
    model.use_modality(ADAPTER)
    found = {"preset": args.preset, "precision": describer.engine.precision, "tokens": args.tokens}
    return {**found, **graph_and_eager(torch, clock, model.language_model, args, model.config.num_query_tokens,
                                       graphs_possible)}


def release_section(torch, clock, args, read_gb_per_s: float, graphs_possible: bool) -> dict:
    """The release preset's LLM with the product's LoRA adapters, random weights, cast and on the device."""
    from transformers import AutoModelForCausalLM

    from contract.modalities import ADAPTER_MODALITIES
    from runtime.torch_decoder import PRECISIONS
    from training.config import RegionBLIPConfig
    from training.lora import OPT_TARGETS, activate_adapter, add_adapters

    config = RegionBLIPConfig.preset(args.release_preset)
    start = time.perf_counter()
    with torch.device(args.device):
        language_model = AutoModelForCausalLM.from_config(config.text_config())
    add_adapters(language_model, list(ADAPTER_MODALITIES), OPT_TARGETS, config)
    # to(device) as well: a transformers version that ignored the device context would have built it on the host
    language_model.to(device=args.device, dtype=PRECISIONS[args.precision]).eval().requires_grad_(False)
    activate_adapter(language_model, ADAPTER)
    built_s = time.perf_counter() - start
    positions = language_model.model.decoder.embed_positions.weight
    unique = {p.data_ptr(): p for p in language_model.parameters()}
    weight_bytes = sum(p.nbytes for p in unique.values()) - positions.nbytes
    bound_ms = weight_bytes / read_gb_per_s / 1e6
    found = {"preset": args.release_preset, "precision": args.precision, "tokens": args.tokens,
             "build_s": built_s, "weight_bytes": weight_bytes, "read_gb_per_s": read_gb_per_s,
             "read_bound_ms": bound_ms}
    def more(figures):
        figures["read_bound_with_kv_cache_ms"] = bound_ms + figures["kv_cache_bytes"] / read_gb_per_s / 1e6
        figures["vs_read_bound"] = figures["device_ms_per_token"]["median"] / bound_ms
        return figures

    with torch.no_grad():
        found.update(graph_and_eager(torch, clock, language_model, args, config.num_query_tokens, graphs_possible,
                                     more))
    del language_model
    return found


def agreement(describers: dict, frames, boxes, tokens: int) -> dict:
    """Greedy tokens of each describer against the fp32 static decoder's, over every frame's regions."""
    outputs = {}
    for name, describer in describers.items():
        describer.configure(num_beams=1, max_new_tokens=tokens, min_new_tokens=tokens)
        outputs[name] = [d.token_ids for frame in frames for d in describer.describe_image_regions(frame, boxes)]
    reference = outputs.pop("fp32")
    found = {"frames": len(frames), "regions": len(reference), "tokens": tokens, "against": "fp32 static decoder"}
    for name, rows in outputs.items():
        prefixes = [next((i for i, (a, b) in enumerate(zip(row, ref)) if a != b), len(ref)) / max(len(ref), 1)
                    for row, ref in zip(rows, reference)]
        found[name] = {"sequences": float(np.mean([row == ref for row, ref in zip(rows, reference)])),
                       "tokens": float(np.mean(prefixes))}
    return found


def bundle_backend(backend: str, checkpoint: Path, work: Path, args, frames, boxes) -> dict:
    """The describer figures over an exported bundle, where the backend's package is importable."""
    from runtime import Describer

    if backend == "tensorrt":
        try:
            import tensorrt
        except ImportError as error:
            return {"present": False, "why": f"tensorrt is not importable ({error})"}
        from export.trt import main as export
        version, options = tensorrt.__version__, ["--fp16"]
    else:
        import onnxruntime

        providers = onnxruntime.get_available_providers()
        if "CUDAExecutionProvider" not in providers:
            return {"present": False, "why": f"onnxruntime {onnxruntime.__version__} has no CUDAExecutionProvider "
                                             f"(providers {providers}): onnxruntime-gpu is not installed"}
        from export.onnx import main as export
        version, options = onnxruntime.__version__, []
    bundle = work / f"bundle-{backend}"
    code = export(["--ckpt", str(checkpoint), "--out", str(bundle), "--modalities", ADAPTER,
                   "--max-new-tokens", str(args.tokens), *options])
    if code != 0:
        return {"present": True, "version": version, "error": f"the bundle export exited with {code}"}
    describer = Describer.from_bundle(bundle, backend=backend, device="cuda")
    return {"present": True, "version": version,
            **describer_figures(describer, frames, boxes, args.tokens, args.warmup, args.repeats)}


def run(args) -> dict:
    import torch

    from runtime import Describer
    from tools.random_checkpoint import write_random_checkpoint

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    cuda = torch.device(args.device).type == "cuda"
    clock, started = Clock(torch, args.device), time.perf_counter()
    report = {"environment": environment(torch, args.device), "conditions": {
        "preset": args.preset, "release_preset": args.release_preset, "precision": args.precision,
        "regions": args.regions, "tokens": args.tokens, "frames": args.frames, "warmup": args.warmup,
        "repeats": args.repeats, "statistic": "median", "weights": "random"}}

    def section(name, work):
        begun = time.perf_counter()
        report[name] = attempt(work)
        report[name]["seconds"] = time.perf_counter() - begun
        if args.out:
            args.out.write_text(json.dumps(report, indent=2) + "\n")

    # First what needs no checkpoint: a failure in the RegionBLIP model does not lose the release figures.
    section("memory_bandwidth", lambda: memory_bandwidth(torch, clock, args.device, args.buffer_mib,
                                                         args.warmup, args.repeats))
    read_rate = report["memory_bandwidth"].get("read_gb_per_s", float("nan"))
    section("release", lambda: release_section(torch, clock, args, read_rate, cuda))
    if cuda:
        torch.cuda.empty_cache()
    frames, boxes = frames_and_boxes(args.frames, args.regions)
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        checkpoint = work / "checkpoint"

        def write_checkpoint():
            write_random_checkpoint(args.preset, checkpoint)
            return {"preset": args.preset, "mib": sum(f.stat().st_size for f in checkpoint.iterdir()) / 2**20}

        section("checkpoint", write_checkpoint)
        describers = {}

        def describer(name, **options):
            if name not in describers:
                options = {"decoder": "static", **options}
                describers[name] = Describer.from_checkpoint(checkpoint, args.device, **options)
            return describers[name]

        fast = dict(precision=args.precision, cuda_graphs=cuda)
        section("describer", lambda: {**engine_summary(describer("fast", **fast).engine), "preset": args.preset,
                                      **describer_figures(describers["fast"], frames, boxes, args.tokens,
                                                          args.warmup, args.repeats)})
        section("describer_transformers_fp32", lambda: {
            **engine_summary(describer("transformers", decoder="transformers").engine), "preset": args.preset,
            **describer_figures(describers["transformers"], frames, boxes, args.tokens, args.warmup, args.repeats)})
        section("decode", lambda: decode_section(torch, clock, describer("fast", **fast), args, cuda))
        section("agreement", lambda: agreement({
            "fp32": describer("fp32", precision="fp32", cuda_graphs=cuda),
            "fp16": describer("fast", **fast) if args.precision == "fp16" else describer("fp16", precision="fp16"),
            "bf16": describer("bf16", precision="bf16", cuda_graphs=cuda),
            "transformers_fp32": describer("transformers", decoder="transformers"),
        }, frames, boxes, args.tokens))
        for backend, name in (("tensorrt", "tensorrt"), ("onnxruntime", "onnxruntime_cuda")):
            section(name, lambda: bundle_backend(backend, checkpoint, work, args, frames, boxes) if cuda
                    else {"present": False, "why": "measured only with --device cuda"})
    report["definitions"] = DEFINITIONS
    report["seconds"] = time.perf_counter() - started
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m tools.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (or cuda:N), or cpu for the tiny structure run")
    parser.add_argument("--preset", help="describer and decode preset (default bench; tiny on cpu)")
    parser.add_argument("--release-preset", help="release-size LLM preset (default blip2-opt-2.7b; tiny on cpu)")
    parser.add_argument("--precision", default="fp16", choices=("fp16", "bf16"), help="the fast path's (fp16)")
    parser.add_argument("--regions", type=int, help="boxes per frame, and the second decode batch (16; 4 on cpu)")
    parser.add_argument("--tokens", type=int, help="new tokens per description (20; 4 on cpu), at least 2")
    parser.add_argument("--frames", type=int, help="distinct frames (4; 2 on cpu)")
    parser.add_argument("--warmup", type=int, help="untimed runs before each figure (3; 1 on cpu)")
    parser.add_argument("--repeats", type=int, help="timed runs per figure (10; 3 on cpu)")
    parser.add_argument("--buffer-mib", type=int, help="bandwidth buffer (4096; 64 on cpu)")
    parser.add_argument("--out", type=Path, help="also write the JSON here, after every section")
    try:
        args = parser.parse_args(argv)
        import torch

        kind = torch.device(args.device).type
        if kind not in DEFAULTS:
            raise ValueError(f"--device {args.device!r}: give cuda, cuda:N or cpu")
        if kind == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda, but torch sees no CUDA device (torch.cuda.is_available() is False): "
                             "run on the GPU machine, or pass --device cpu for the structure run")
        names = ("preset", "release_preset", "regions", "tokens", "frames", "warmup", "repeats", "buffer_mib")
        for name, default in zip(names, DEFAULTS[kind]):
            if getattr(args, name) is None:
                setattr(args, name, default)
        if args.tokens < 2 or args.regions < 1 or args.frames < 1 or args.repeats < 1 or args.warmup < 0:
            raise ValueError("need --tokens >= 2, --regions, --frames and --repeats >= 1, --warmup >= 0")
    except ValueError as error:
        print(f"python -m tools.gpu_check: {error}", file=sys.stderr)
        return 2
    report = run(args)
    print(json.dumps(report, indent=2))
    failed = [name for name, value in report.items() if '"error"' in json.dumps(value)]
    if failed:
        print(f"python -m tools.gpu_check: sections {', '.join(failed)} failed (their errors are in the JSON)",
              file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
