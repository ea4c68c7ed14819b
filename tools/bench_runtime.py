"""python -m tools.bench_runtime --preset bench --regions 16 --tokens 20  ->  JSON on stdout

Describes `--regions` boxes per camera frame and compares, each engine in its own process:
  baseline      the torch model as a transformers user runs BLIP-2: crop each region, resize the
                crop, whole-image path, one generate call per crop (greedy, KV cache)
  onnxruntime   this runtime on ONNX Runtime CPU: frame features once, all regions in one batch
  torch         this runtime's torch backend (the checkpoint's generate), for token identity
Every description is exactly --tokens tokens long on both sides (min = max new tokens), so the
ratio compares the same work. It also times one decode step at batch 1 against the memory-
bandwidth bound: bytes of LLM weights / memcpy bandwidth measured in the same process.

The model has random weights at the preset's sizes (no hub here); speed does not depend on them.
This tool builds and exports that model, so it imports training/ and export/ as well as runtime/.
"""
import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FRAME_SIZE = (480, 640)  # camera frame, H x W


def frames_and_boxes(count: int, regions: int, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """Random camera frames and `regions` boxes of 40-240 px per frame (the same boxes for each frame)."""
    rng = np.random.default_rng(seed)
    height, width = FRAME_SIZE
    frames = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]
    size = rng.uniform(40, 240, (regions, 2))
    corner = rng.uniform(0, 1, (regions, 2)) * (np.array([width, height]) - size)
    return frames, np.concatenate([corner, corner + size], axis=1).round()


# ---- preparation (parent process) -----------------------------------------------------------------------------

def prepare(preset: str, workdir: Path) -> None:
    """A random checkpoint at the preset's sizes with a tokenizer of its vocabulary, and its ONNX bundle."""
    import torch
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    from export.onnx import main as export_main
    from training.config import RegionBLIPConfig
    from training.modeling_regionblip import RegionBLIP

    torch.manual_seed(0)
    config = RegionBLIPConfig.preset(preset)
    model = RegionBLIP(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.02)
    vocab = {f"w{i}": i for i in range(config.text_config().vocab_size)}
    vocab.update({"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3})
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")),
                                        bos_token="</s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    model.save_pretrained(workdir / "checkpoint", tokenizer=tokenizer)
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON result
        code = export_main(["--ckpt", str(workdir / "checkpoint"), "--out", str(workdir / "bundle"),
                            "--modalities", "image_region,pointcloud_region"])
    if code != 0:
        raise SystemExit(f"tools.bench_runtime: export failed with exit code {code}")


# ---- workers (one process each) -------------------------------------------------------------------------------

def memcpy_bandwidth(megabytes: int = 256, repeats: int = 5) -> float:
    """Bytes per second of a large numpy copy (read + write counted once, as a weight read is)."""
    source = np.ones(megabytes * 2**20 // 8)
    target = np.empty_like(source)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - start)
    return source.nbytes / best


def llm_weight_bytes(bundle: Path) -> int:
    """Bytes of LLM weights one decode step reads in full: every initializer except those only gathered
    from (the position table, read one row per token)."""
    import onnx

    graph = onnx.load(str(bundle / "llm.onnx")).graph
    consumers: dict[str, set[str]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, set()).add(node.op_type)
    return sum(onnx.numpy_helper.to_array(init).nbytes for init in graph.initializer
               if consumers.get(init.name, set()) - {"Gather"})


def run_baseline(workdir: Path, args) -> dict:
    import torch

    from runtime.preprocess import preprocess_image
    from training.modeling_regionblip import RegionBLIP

    torch.set_num_threads(args.threads or os.cpu_count())
    model = RegionBLIP.from_pretrained(workdir / "checkpoint").eval()
    model.use_modality("image")
    llm = model.language_model
    bos = llm.get_input_embeddings()(torch.tensor([[llm.config.bos_token_id]]))

    @torch.no_grad()
    def describe(frame, boxes):
        tokens = []
        for x1, y1, x2, y2 in boxes.astype(int):
            crop = preprocess_image(np.ascontiguousarray(frame[y1:y2, x1:x2]), model.config.image_size)
            features = model.encode_frames("image", pixel_values=torch.from_numpy(crop)[None])
            _, prompt = model.soft_prompt("image", features)
            embeds = torch.cat([prompt, bos], dim=1)
            out = llm.generate(inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long),
                               max_new_tokens=args.tokens, min_new_tokens=args.tokens, do_sample=False,
                               num_beams=1, eos_token_id=model.config.newline_token_id,
                               pad_token_id=llm.config.pad_token_id)
            tokens.append(out[0].tolist())
        return tokens

    return _time_frames(describe, args) | {"engine": "baseline (crop + generate per region, torch)"}


def run_describer(workdir: Path, args, backend: str) -> dict:
    from runtime.describer import Describer

    if backend == "torch":
        import torch
        torch.set_num_threads(args.threads or os.cpu_count())
        describer = Describer.from_checkpoint(workdir / "checkpoint")
    else:
        describer = Describer.from_bundle(workdir / "bundle", backend=backend, threads=args.threads)
    describer.configure(num_beams=1, max_new_tokens=args.tokens, min_new_tokens=args.tokens)

    def describe(frame, boxes):
        return [list(d.token_ids) for d in describer.describe_image_regions(frame, boxes)]

    result = _time_frames(describe, args) | {"engine": f"regionblip_ros runtime ({backend})"}
    if backend == "onnxruntime":
        result |= decode_step(describer, workdir, args)
    return result


def decode_step(describer, workdir: Path, args) -> dict:
    """ms per decode step at batch 1 with a realistic cache, against the memory-bandwidth bound."""
    from runtime.graph_engine import LanguageModelGraph

    engine = describer.engine
    step = LanguageModelGraph(engine.runner, engine.bundle, engine.adapter_ids(["image_region"]))
    width = engine.bundle.manifest.graphs["llm"].inputs[0].shape[2]
    prompt = np.random.default_rng(0).normal(size=(1, 33, width)).astype(np.float32)
    _, past = step(prompt, np.array([[2]]), None)
    empty, token = prompt[:, :0], np.array([[5]])
    for _ in range(3):
        step(empty, token, past)
    times = []
    for _ in range(args.decode_steps):
        start = time.perf_counter()
        step(empty, token, past)
        times.append(time.perf_counter() - start)
    weights, bandwidth = llm_weight_bytes(workdir / "bundle"), memcpy_bandwidth()
    bound_ms = 1e3 * weights / bandwidth
    step_ms = 1e3 * float(np.median(times))
    return {"decode_ms_per_token_batch1": step_ms, "llm_weights_read_per_step_mb": weights / 2**20,
            "memcpy_gb_per_s": bandwidth / 1e9, "bandwidth_bound_ms": bound_ms,
            "decode_vs_bound": step_ms / bound_ms}


def _time_frames(describe, args) -> dict:
    frames, boxes = frames_and_boxes(args.frames + 1, args.regions)
    describe(frames[0], boxes)  # warm-up: first-call allocations and thread start-up
    tokens, times = [], []
    for frame in frames[1:]:
        start = time.perf_counter()
        tokens.append(describe(frame, boxes))
        times.append(time.perf_counter() - start)
    ms_per_frame = 1e3 * float(np.mean(times))
    return {"ms_per_frame": ms_per_frame, "rois_per_s": args.regions / (ms_per_frame / 1e3), "tokens": tokens}


# ---- parent ---------------------------------------------------------------------------------------------------

def run_worker(engine: str, workdir: Path, args) -> dict:
    command = [sys.executable, "-m", "tools.bench_runtime", "--worker", engine, "--workdir", str(workdir),
               "--regions", str(args.regions), "--tokens", str(args.tokens), "--frames", str(args.frames),
               "--decode-steps", str(args.decode_steps)] + (["--threads", str(args.threads)] if args.threads else [])
    # tools/ is not installed: the worker finds it from the repository root, whatever the caller's directory.
    done = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if done.returncode != 0:
        raise SystemExit(f"tools.bench_runtime: the {engine} worker failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="regionblip-bench-") as directory:
        workdir = Path(directory)
        start = time.perf_counter()
        prepare(args.preset, workdir)
        prepare_s = time.perf_counter() - start
        results = {engine: run_worker(engine, workdir, args) for engine in ("baseline", "onnxruntime", "torch")}
    tokens = {engine: result.pop("tokens") for engine, result in results.items()}
    baseline, ours = results["baseline"], results["onnxruntime"]
    return {
        "preset": args.preset, "regions_per_frame": args.regions, "tokens_per_region": args.tokens,
        "frames_timed": args.frames, "threads": args.threads or os.cpu_count(), "cpu_count": os.cpu_count(),
        "prepare_s": prepare_s,
        "baseline": baseline, "onnxruntime": ours, "torch": results["torch"],
        "speedup_rois_per_s": ours["rois_per_s"] / baseline["rois_per_s"],
        "greedy_tokens_identical_onnxruntime_vs_torch": tokens["onnxruntime"] == tokens["torch"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench_runtime", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="bench", help="model size preset (tiny, bench)")
    parser.add_argument("--regions", type=int, default=16, help="regions per frame")
    parser.add_argument("--tokens", type=int, default=20, help="tokens generated per region")
    parser.add_argument("--frames", type=int, default=3, help="frames timed after one warm-up frame")
    parser.add_argument("--decode-steps", type=int, default=30, help="decode steps timed at batch 1")
    parser.add_argument("--threads", type=int, help="intra-op threads (default: all cores)")
    parser.add_argument("--worker", choices=("baseline", "onnxruntime", "torch"), help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.regions < 1 or args.tokens < 1 or args.frames < 1:
        print("tools.bench_runtime: --regions, --tokens and --frames must be at least 1", file=sys.stderr)
        return 2
    if args.worker == "baseline":
        result = run_baseline(args.workdir, args)
    elif args.worker:
        result = run_describer(args.workdir, args, args.worker)
    else:
        result = run(args)
    print(json.dumps(result, indent=None if args.worker else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
