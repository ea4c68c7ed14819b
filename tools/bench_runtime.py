"""python -m tools.bench_runtime --preset bench --regions 16 --tokens 20 --rounds 3  ->  JSON on stdout

Describes `--regions` boxes per camera frame. Each engine runs in its own process, and the engines
take turns over --rounds rounds (onnxruntime, batched at each thread count, per-crop, then again), so
that a change in the machine's load falls on all of them:
  onnxruntime   this runtime on ONNX Runtime CPU: frame features once, all regions in one batch
  batched       the strongest transformers peer, and the headline: transformers' own
                Blip2ForConditionalGeneration holding the checkpoint's image path, every region's crop
                (cropped, resized) in ONE generate call (greedy, KV cache), at each --baseline-threads
                torch thread count; each round's faster one is the one compared against
  per-crop      the same crops, one generate call per crop (the checkpoint's image path, i.e. BLIP-2)
  torch         this runtime's torch backend (the checkpoint's generate), once, for token identity
Every description is exactly --tokens tokens long everywhere (min = max new tokens), so the ratios
compare the same work. Each round the onnxruntime worker also times a decode step at batch 1 and at
--regions rows, and measures what bounds it: the read bound (bytes of LLM weights a step reads ÷ the
read bandwidth of numpy .max() over a buffer as large as those weights, read again and again as decode
steps read them, from whichever cache level holds them) and the compute bound (the step's FLOPs ÷ numpy's
fp32 GEMM rate at that batch, at the runtime's thread count). The JSON's "definitions" says what each
number is.

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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from export.quantize import QUANTIZE

FRAME_SIZE = (480, 640)  # camera frame, H x W
PREFIX_LENGTH = 33  # soft-prompt rows fed with BOS before the timed decode steps: a 34-token KV cache
QUANTIZED = "onnxruntime-quantized"
DEFINITIONS = {
    "quantized": "with --quantized: the runtime on that bundle variant, timed in every round like the fp32 one; its "
                 "token agreement is with the fp32 runtime's greedy tokens on the same frames",
    "rois_per_s, ms_per_frame": "regions described per second and ms per frame, mean over --frames frames after "
                                "one warm-up frame; {median, min, max, rounds} over the --rounds rounds",
    "headline.speedup_vs_batched_baseline": "each round's onnxruntime ROIs/s ÷ the batched baseline's at its faster "
                                            "thread count in that round (batched_baseline_threads, per round)",
    "speedup_vs_per_crop_baseline": "onnxruntime ROIs/s ÷ per-crop-baseline ROIs/s, per round",
    "token_agreement": "fraction of timed regions (first round) whose greedy token ids are identical. The runtime "
                       "describes regions through the image_region path (whole frame, box prompt, LoRA) and the "
                       "baselines through the image path on crops: different models, so runtime vs baseline "
                       "agreement is no check of correctness; batched vs per-crop (same model, same crops) and "
                       "onnxruntime vs torch (same model, two backends) are",
    "onnxruntime.host_device_bytes_per_step": "mean bytes a decode step moves between host and the runner's memory "
                                              "(GraphEngine.transfers, first round, warm-up frame included): the "
                                              "whole KV cache both ways with numpy feeds (greedy on CPU), only the "
                                              "fed ids and the ranked tokens with the cache kept in the runner's "
                                              "memory (GPU, beam search)",
    "limits.llm_weights_read_per_step_mb": "bytes of LLM initializers a decode step reads in full: all but those "
                                           "only gathered from (the position table; an untied token embedding), MiB",
    "limits.lm_head_mb, vocab_share": "the vocabulary projection's bytes, and its share of the step's reads",
    "limits.matmul_params": "elements of the initializers MatMul/Gemm read (lm_head included; LoRA's rank-r "
                            "products, under 1 % of a layer's FLOPs, left out)",
    "limits.read_gb_per_s": "GB/s (1e9) of numpy float32 .max() over a buffer of llm_weights_read_per_step bytes, "
                            "read 5 times, the best; the faster of 1 thread "
                            "and the runtime's thread count (each reads its share); each byte counted once",
    "limits.read_bound_ms": "llm_weights_read_per_step ÷ the fastest round's read_gb_per_s: no step that reads "
                            "its weights from memory is faster (the KV cache, read too, is left out)",
    "limits.batch_*.decode_ms_per_step": "median ms of one llm-graph call with that many rows, each with a "
                                         "34-token KV cache (soft prompt + BOS), --decode-steps calls",
    "limits.batch_*.flops_per_step": "2 × matmul_params × rows + attention (4 × rows × layers × 35 × hidden)",
    "limits.batch_*.gemm_gflops": "numpy fp32 (rows, D) @ (D, 4D), D the LLM width, the same weights each call "
                                  "(so from cache), at the runtime's thread count, best of 5 × 20 calls",
    "limits.batch_*.compute_bound_ms": "flops_per_step ÷ the fastest round's gemm_gflops: the step's FLOPs at "
                                       "numpy's rate for the model's shape, not the CPU's peak",
    "limits.gemm_gflops_square_1024": "numpy fp32 (1024, 1024) @ (1024, 1024), best of 5 × 5 calls: the best rate "
                                      "this BLAS reaches here; ONNX Runtime's kernels can beat numpy's at the "
                                      "model's shape, so compute_bound_ms_square_rate (flops_per_step at the "
                                      "fastest round's square rate) is the firmer compute bound",
    "limits.batch_*.decode_vs_*_bound": "each round's decode_ms_per_step ÷ that bound (1 = at the bound)",
    "load_average_1min": "os.getloadavg()[0] at the start of each round and at the end",
}


def frames_and_boxes(count: int, regions: int, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """Random camera frames and `regions` boxes of 40-240 px per frame (the same boxes for each frame)."""
    rng = np.random.default_rng(seed)
    height, width = FRAME_SIZE
    frames = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]
    size = rng.uniform(40, 240, (regions, 2))
    corner = rng.uniform(0, 1, (regions, 2)) * (np.array([width, height]) - size)
    return frames, np.concatenate([corner, corner + size], axis=1).round()


# ---- preparation (parent process) -----------------------------------------------------------------------------

def prepare(preset: str, workdir: Path, quantized: str | None = None) -> None:
    """A random checkpoint at the preset's sizes with a tokenizer of its vocabulary, and its ONNX bundle (and
    the `quantized` variant of it as bundle-<variant>)."""
    from export.onnx import main as export_main
    from tools.random_checkpoint import write_random_checkpoint

    write_random_checkpoint(preset, workdir / "checkpoint")
    for name, flags in [("bundle", [])] + ([(f"bundle-{quantized}", ["--quantize", quantized])] if quantized else []):
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON result
            code = export_main(["--ckpt", str(workdir / "checkpoint"), "--out", str(workdir / name),
                                "--modalities", "image_region,pointcloud_region", *flags])
        if code != 0:
            raise SystemExit(f"tools.bench_runtime: export of {name} failed with exit code {code}")


def llm_graph_sizes(bundle: Path) -> dict:
    """What a decode step of the bundle's llm graph reads and multiplies, from its initializers' shapes."""
    import onnx

    graph = onnx.load(str(bundle / "llm.onnx"), load_external_data=False).graph
    consumers: dict[str, set[str]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, set()).add(node.op_type)
    logits_node = next(node for node in graph.node if "logits" in node.output)

    def nbytes(init) -> int:
        return int(np.prod(init.dims)) * onnx.helper.tensor_dtype_to_np_dtype(init.data_type).itemsize

    read = [init for init in graph.initializer if consumers.get(init.name, set()) - {"Gather"}]
    return {"weights_bytes": sum(nbytes(init) for init in read),
            "lm_head_bytes": sum(nbytes(init) for init in read if init.name in logits_node.input),
            "matmul_params": sum(int(np.prod(init.dims)) for init in read
                                 if consumers[init.name] & {"MatMul", "Gemm"} and len(init.dims) >= 2)}


# ---- workers (one process each) -------------------------------------------------------------------------------

def blip2_from_regionblip(model):
    """transformers' Blip2ForConditionalGeneration holding `model`'s image path, which is exactly BLIP-2: no
    LoRA wrappers, none of this project's code in the loop."""
    from transformers import Blip2Config, Blip2ForConditionalGeneration

    config = model.config
    blip2 = Blip2ForConditionalGeneration(Blip2Config(
        vision_config=config.vision, qformer_config=config.qformer, text_config=config.text,
        num_query_tokens=config.num_query_tokens, image_token_index=config.text_config().vocab_size - 1))
    state = {}
    for key, tensor in model.state_dict().items():
        key = key.replace(".base_layer.", ".")  # peft's wrapped Linears
        if key == "query_tokens.image":
            state["query_tokens"] = tensor
        elif key.startswith("language_projection.image."):
            state[key.replace(".image.", ".", 1)] = tensor
        elif key.startswith(("vision_model.", "qformer.", "language_model.")) and ".lora_" not in key:
            state[key] = tensor
    blip2.load_state_dict(state, strict=True)
    return blip2.eval()


def crops(frame: np.ndarray, boxes: np.ndarray, image_size: int) -> list[np.ndarray]:
    """Each region cropped from the frame and resized, as the vision encoder takes it (3, S, S)."""
    from runtime.preprocess import preprocess_image

    return [preprocess_image(np.ascontiguousarray(frame[y1:y2, x1:x2]), image_size)
            for x1, y1, x2, y2 in boxes.astype(int)]


def run_batched(workdir: Path, args) -> dict:
    import torch

    from training.modeling_regionblip import RegionBLIP

    torch.set_num_threads(args.threads)
    regionblip = RegionBLIP.from_pretrained(workdir / "checkpoint")
    image_size, newline = regionblip.config.image_size, regionblip.config.newline_token_id
    model = blip2_from_regionblip(regionblip)
    del regionblip
    prompt_length = model.config.num_query_tokens + 1  # image tokens + BOS, returned before the new tokens

    @torch.inference_mode()
    def describe(frame, boxes):
        pixel_values = torch.from_numpy(np.stack(crops(frame, boxes, image_size)))  # (R, 3, S, S)
        out = model.generate(pixel_values=pixel_values, max_new_tokens=args.tokens, min_new_tokens=args.tokens,
                             do_sample=False, num_beams=1, eos_token_id=newline,
                             pad_token_id=model.config.text_config.pad_token_id)
        return out[:, prompt_length:].tolist()

    return _time_frames(describe, args) | {"engine": "transformers Blip2ForConditionalGeneration, all crops in "
                                                      f"one generate call, torch threads: {args.threads}"}


def run_per_crop(workdir: Path, args) -> dict:
    import torch

    from training.modeling_regionblip import RegionBLIP

    torch.set_num_threads(args.threads or os.cpu_count())
    model = RegionBLIP.from_pretrained(workdir / "checkpoint").eval()
    model.use_modality("image")
    llm = model.language_model
    bos = llm.get_input_embeddings()(torch.tensor([[llm.config.bos_token_id]]))

    @torch.no_grad()
    def describe(frame, boxes):
        tokens = []
        for crop in crops(frame, boxes, model.config.image_size):
            features = model.encode_frames("image", pixel_values=torch.from_numpy(crop)[None])
            _, prompt = model.soft_prompt("image", features)
            embeds = torch.cat([prompt, bos], dim=1)
            out = llm.generate(inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long),
                               max_new_tokens=args.tokens, min_new_tokens=args.tokens, do_sample=False,
                               num_beams=1, eos_token_id=model.config.newline_token_id,
                               pad_token_id=llm.config.pad_token_id)
            tokens.append(out[0].tolist())
        return tokens

    return _time_frames(describe, args) | {"engine": "crop + generate per region (torch, the checkpoint's image "
                                                      "path)"}


def run_describer(workdir: Path, args, backend: str) -> dict:
    from runtime.describer import Describer

    if backend == "torch":
        import torch
        torch.set_num_threads(args.threads or os.cpu_count())
        describer = Describer.from_checkpoint(workdir / "checkpoint")
    else:
        describer = Describer.from_bundle(workdir / args.bundle_name, backend=backend, threads=args.threads)
    describer.configure(num_beams=1, max_new_tokens=args.tokens, min_new_tokens=args.tokens)

    def describe(frame, boxes):
        return [list(d.token_ids) for d in describer.describe_image_regions(frame, boxes)]

    result = _time_frames(describe, args) | {"engine": f"regionblip_ros runtime ({backend})"}
    if backend != "torch":
        result["host_device_bytes_per_step"] = describer.engine.transfers.bytes_per_step
    if backend == "onnxruntime":
        threads = args.threads or os.cpu_count()
        width = describer.engine.bundle.manifest.graphs["llm"].inputs[0].shape[2]
        result["decode_ms_per_step"] = {rows: decode_step_ms(describer, rows, args.decode_steps)
                                        for rows in (1, args.regions)}
        weights = llm_graph_sizes(workdir / args.bundle_name)["weights_bytes"]
        result["read_gb_per_s"] = {count: read_bandwidth(count, weights) / 1e9 for count in (1, threads)}
        result["gemm_gflops"] = {rows: gemm_rate(rows, width) / 1e9 for rows in (1, args.regions)}
        result["gemm_gflops_square_1024"] = gemm_rate(1024, 1024, width_out=1024, calls=5) / 1e9
    return result


def decode_step_ms(describer, rows: int, steps: int) -> float:
    """Median ms of one greedy llm-graph decode step at `rows` rows, each with a 34-token cache (prompt + BOS):
    the step as the decoder makes it (the graph's best token per row, not the logits)."""
    from runtime.graph_engine import LanguageModelGraph

    engine = describer.engine
    step = LanguageModelGraph(engine.runner, engine.bundle, engine.adapter_ids(["image_region"]))
    width = engine.bundle.manifest.graphs["llm"].inputs[0].shape[2]
    prompt = np.random.default_rng(0).normal(size=(rows, PREFIX_LENGTH, width)).astype(np.float32)
    bias = np.zeros(step.vocab_size, np.float32)
    *_, past = step.top_tokens(prompt, np.full((rows, 1), 2), None, bias, 1)
    empty, token = prompt[:, :0], np.full((rows, 1), 5)
    for _ in range(3):
        step.top_tokens(empty, token, past, bias, 1)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step.top_tokens(empty, token, past, bias, 1)
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def read_bandwidth(threads: int, nbytes: int, repeats: int = 5) -> float:
    """Bytes per second that `threads` threads read, each taking the max of its share of an `nbytes` float32 buffer,
    again and again. A decode step reads the same weights every step: where they fit in a cache (the bench preset's
    135 MB LLM in a 300 MB L3) they come from there. The max is SIMD and reads as fast as memory delivers (the same
    GB/s over int8 as over float32 here); numpy's float64 .sum(), this tool's earlier probe, is pairwise and bound
    by its adds on some CPUs (7.5 GB/s a thread against 13-15 for .max() on the README's machine)."""
    buffer = np.ones(max(nbytes, 2**20) // 4, np.float32)
    shares = np.array_split(buffer, threads)
    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:  # numpy's reductions release the GIL
        for _ in range(repeats):
            start = time.perf_counter()
            list(pool.map(np.max, shares))
            best = min(best, time.perf_counter() - start)
    return buffer.nbytes / best


def gemm_rate(rows: int, width: int, width_out: int | None = None, repeats: int = 5, calls: int = 20) -> float:
    """FLOPs per second of numpy's fp32 (rows, D) @ (D, 4D), the shape of a decoder layer's fc1 (or D x width_out)."""
    width_out = width_out or 4 * width
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(rows, width)).astype(np.float32), rng.normal(size=(width, width_out)).astype(np.float32)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            a @ b
        best = min(best, (time.perf_counter() - start) / calls)
    return 2 * rows * width * width_out / best


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

def run_worker(engine: str, workdir: Path, args, threads: int | None, bundle: str = "bundle") -> dict:
    command = [sys.executable, "-m", "tools.bench_runtime", "--worker", engine, "--workdir", str(workdir),
               "--regions", str(args.regions), "--tokens", str(args.tokens), "--frames", str(args.frames),
               "--decode-steps", str(args.decode_steps), "--bundle-name", bundle]
    command += ["--threads", str(threads)] if threads else []
    env = dict(os.environ)
    if engine == "onnxruntime":  # its numpy GEMM runs at the runtime's thread count
        env["OPENBLAS_NUM_THREADS"] = str(args.threads or os.cpu_count())
    # tools/ is not installed: the worker finds it from the repository root, whatever the caller's directory.
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[1])
    if done.returncode != 0:
        raise SystemExit(f"tools.bench_runtime: the {engine} worker failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def spread(values: list[float]) -> dict:
    return {"median": float(np.median(values)), "min": min(values), "max": max(values), "rounds": values}


def agreement(ours: list, theirs: list) -> float:
    """Fraction of regions whose token ids are identical (tokens: per frame, per region)."""
    pairs = [(a, b) for frame_a, frame_b in zip(ours, theirs, strict=True)
             for a, b in zip(frame_a, frame_b, strict=True)]
    return sum(a == b for a, b in pairs) / len(pairs)


def timing(results: list[dict], **extra) -> dict:
    return {"engine": results[0]["engine"], **extra, "rois_per_s": spread([r["rois_per_s"] for r in results]),
            "ms_per_frame": spread([r["ms_per_frame"] for r in results])}


def limits(runtime: list[dict], sizes: dict, rows: int, num_layers: int, width: int) -> dict:
    """The decode step's read and compute bounds. A bound is the machine's: it takes the fastest rate any round
    measured (a busy round measures less than the machine does), and each round's step is held against it."""
    weights = sizes["weights_bytes"]
    read = [max(r["read_gb_per_s"].values()) for r in runtime]
    read_bound = 1e3 * weights / (max(read) * 1e9)
    result = {"llm_weights_read_per_step_mb": weights / 2**20, "lm_head_mb": sizes["lm_head_bytes"] / 2**20,
              "vocab_share": sizes["lm_head_bytes"] / weights, "matmul_params": sizes["matmul_params"],
              "read_gb_per_s": spread(read),
              "read_gb_per_s_by_threads": {count: spread([r["read_gb_per_s"][count] for r in runtime])
                                           for count in runtime[0]["read_gb_per_s"]},
              "read_bound_ms": read_bound,
              "gemm_gflops_square_1024": spread([r["gemm_gflops_square_1024"] for r in runtime])}
    for batch in dict.fromkeys([1, rows]):
        attended = PREFIX_LENGTH + 2  # the cache and the new token
        flops = 2 * sizes["matmul_params"] * batch + 4 * batch * num_layers * attended * width
        step = [r["decode_ms_per_step"][str(batch)] for r in runtime]
        gemm = [r["gemm_gflops"][str(batch)] for r in runtime]
        compute_bound = 1e3 * flops / (max(gemm) * 1e9)
        square_bound = 1e3 * flops / (max(r["gemm_gflops_square_1024"] for r in runtime) * 1e9)
        result[f"batch_{batch}"] = {
            "decode_ms_per_step": spread(step), "flops_per_step": flops, "gemm_gflops": spread(gemm),
            "compute_bound_ms": compute_bound, "compute_bound_ms_square_rate": square_bound,
            "decode_vs_read_bound": spread([ms / read_bound for ms in step]),
            "decode_vs_compute_bound": spread([ms / compute_bound for ms in step]),
            "decode_vs_compute_bound_square_rate": spread([ms / square_bound for ms in step])}
    return result


def run(args) -> dict:
    counts = sorted(set(args.baseline_threads))
    load = []
    with tempfile.TemporaryDirectory(prefix="regionblip-bench-") as directory:
        workdir = Path(directory)
        start = time.perf_counter()
        prepare(args.preset, workdir, args.quantized)
        prepare_s = time.perf_counter() - start
        sizes = llm_graph_sizes(workdir / "bundle")
        layout = json.loads((workdir / "bundle" / "manifest.json").read_text())["llm"]
        rounds = []
        for _ in range(args.rounds):
            load.append(os.getloadavg()[0])
            rounds.append({"onnxruntime": run_worker("onnxruntime", workdir, args, args.threads),
                           **({QUANTIZED: run_worker("onnxruntime", workdir, args, args.threads,
                                                     bundle=f"bundle-{args.quantized}")} if args.quantized else {}),
                           **{f"batched@{t}": run_worker("batched", workdir, args, t) for t in counts},
                           "per-crop": run_worker("per-crop", workdir, args, args.threads)})
        torch_runtime = run_worker("torch", workdir, args, args.threads)
        load.append(os.getloadavg()[0])
    tokens = {engine: result.pop("tokens") for engine, result in rounds[0].items()} | {
        "torch": torch_runtime.pop("tokens")}
    for later in rounds[1:]:
        for result in later.values():
            del result["tokens"]
    by_engine = {engine: [r[engine] for r in rounds] for engine in rounds[0]}
    # The strongest peer of each round: its faster thread count in that round (a busy core hurts 2 threads most)
    fastest = [max(counts, key=lambda t: r[f"batched@{t}"]["rois_per_s"]) for r in rounds]
    ours = by_engine["onnxruntime"]
    batched = [r[f"batched@{t}"] for r, t in zip(rounds, fastest)]
    result = {
        "headline": {"speedup_vs_batched_baseline": spread([a["rois_per_s"] / b["rois_per_s"]
                                                            for a, b in zip(ours, batched)]),
                     "onnxruntime_rois_per_s": spread([r["rois_per_s"] for r in ours]),
                     "batched_baseline_rois_per_s": spread([r["rois_per_s"] for r in batched]),
                     "batched_baseline_threads": fastest},
        "preset": args.preset, "regions_per_frame": args.regions, "tokens_per_region": args.tokens,
        "frames_timed": args.frames, "rounds": args.rounds, "threads": args.threads or os.cpu_count(),
        "cpu_count": os.cpu_count(), "prepare_s": prepare_s, "load_average_1min": load,
        "onnxruntime": timing(ours, host_device_bytes_per_step=ours[0]["host_device_bytes_per_step"]),
        "batched_baseline": {"by_threads": {t: timing(by_engine[f"batched@{t}"], threads=t) for t in counts}},
        "per_crop_baseline": timing(by_engine["per-crop"], threads=args.threads or os.cpu_count()),
        "torch_runtime": {"engine": torch_runtime["engine"], "rois_per_s": torch_runtime["rois_per_s"],
                          "ms_per_frame": torch_runtime["ms_per_frame"], "rounds": 1},
        "speedup_vs_per_crop_baseline": spread([a["rois_per_s"] / b["rois_per_s"]
                                                for a, b in zip(ours, by_engine["per-crop"])]),
        "token_agreement": {
            "onnxruntime_vs_batched_baseline": agreement(tokens["onnxruntime"], tokens[f"batched@{fastest[0]}"]),
            "batched_vs_per_crop_baseline": agreement(tokens[f"batched@{fastest[0]}"], tokens["per-crop"]),
            "onnxruntime_vs_torch_runtime": agreement(tokens["onnxruntime"], tokens["torch"])},
        "limits": limits(ours, sizes, args.regions, layout["num_layers"], layout["num_heads"] * layout["head_dim"]),
        "definitions": DEFINITIONS,
    }
    if args.quantized:
        quantized = by_engine[QUANTIZED]
        result["quantized"] = {
            "variant": args.quantized, **timing(quantized),
            "speedup_vs_batched_baseline": spread([a["rois_per_s"] / b["rois_per_s"]
                                                   for a, b in zip(quantized, batched)]),
            "speedup_vs_fp32_runtime": spread([a["rois_per_s"] / b["rois_per_s"] for a, b in zip(quantized, ours)]),
            "decode_ms_per_step": {rows: spread([r["decode_ms_per_step"][rows] for r in quantized])
                                   for rows in quantized[0]["decode_ms_per_step"]},
            "token_agreement_with_fp32_runtime": agreement(tokens[QUANTIZED], tokens["onnxruntime"])}
    return result


def thread_counts(text: str) -> list[int]:
    try:
        return [int(count) for count in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of thread counts, e.g. 1,2") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench_runtime", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="bench",
                        help="model size preset: tiny, bench, bench-opt-125m (bench's ViT and Q-Former with "
                             "OPT-125M's language model, whose vocabulary projection is a realistic share of a "
                             "decode step), blip2-opt-2.7b")
    parser.add_argument("--regions", type=int, default=16, help="regions per frame")
    parser.add_argument("--tokens", type=int, default=20, help="tokens generated per region")
    parser.add_argument("--frames", type=int, default=3, help="frames timed after one warm-up frame")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of all engines, interleaved")
    parser.add_argument("--decode-steps", type=int, default=30, help="decode steps timed at each batch")
    parser.add_argument("--threads", type=int, help="intra-op threads (default: all cores)")
    parser.add_argument("--baseline-threads", type=thread_counts, default=[1, 2],
                        help="torch thread counts tried for the batched baseline, comma-separated (default 1,2)")
    parser.add_argument("--quantized", choices=QUANTIZE,
                        help="also time the runtime on this quantized variant of the bundle (export.onnx --quantize), "
                             "against the same peer and against the fp32 runtime, with its token agreement")
    parser.add_argument("--worker", choices=("onnxruntime", "torch", "batched", "per-crop"), help=argparse.SUPPRESS)
    parser.add_argument("--bundle-name", default="bundle", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.regions, args.tokens, args.frames, args.rounds, args.decode_steps, *args.baseline_threads) < 1:
        print("tools.bench_runtime: --regions, --tokens, --frames, --rounds, --decode-steps and --baseline-threads "
              "must be at least 1", file=sys.stderr)
        return 2
    if args.worker == "batched":
        result = run_batched(args.workdir, args)
    elif args.worker == "per-crop":
        result = run_per_crop(args.workdir, args)
    elif args.worker:
        result = run_describer(args.workdir, args, args.worker)
    else:
        result = run(args)
    print(json.dumps(result, indent=None if args.worker else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
