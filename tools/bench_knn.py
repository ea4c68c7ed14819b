"""python -m tools.bench_knn [--presets bench blip2-opt-2.7b] [--batches 8 1]  ->  JSON on stdout

Peak memory of Point-BERT's kNN grouping at scene size (40 000 points), for its two distance forms:
  cdist    torch.cdist(centres, points).square() then TopK, the code before issue #14
  matmul   training.pointbert.nearest_neighbours: |c|² - 2 c·p + |p|² as one matmul, then TopK
Each case runs in a fresh process, so that peaks do not mix:
  torch/group_points          eager group_points alone (FPS + distances + TopK + gather)
  torch/point_encoder         eager RegionBLIP.point_features (Point-BERT + the Q-Former adapter Linear)
  onnxruntime/point_encoder   the point_encoder graph (export/graphs.py's wrapper, export/onnx.py's
                              torch.onnx.export arguments) on ONNX Runtime CPU, with the runtime's session options
A case warms up on a small cloud, resets the process's peak RSS (/proc/self/clear_refs), runs once at the full
size and reports the peak RSS (VmHWM) and its rise over the RSS just before. The weights are random at the
preset's point-encoder sizes (the presets' whole models do not fit here); memory does not depend on them.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KNN = ("cdist", "matmul")
CASES = (("torch", "group_points"), ("torch", "point_encoder"), ("onnxruntime", "point_encoder"))


def cdist_nearest_neighbours(centres, points, k):
    """The kNN of group_points before issue #14."""
    import torch

    nearest = torch.cdist(centres, points).square().topk(k, dim=-1, largest=False)
    return nearest.values, nearest.indices


def use_knn(knn: str) -> None:
    from training import pointbert

    if knn == "cdist":
        pointbert.nearest_neighbours = cdist_nearest_neighbours  # group_points looks it up at call time


def point_model(preset: str):
    """RegionBLIP's point path alone, at the preset's sizes: what export.graphs.PointEncoder calls."""
    import torch
    from torch import nn

    from training.config import RegionBLIPConfig
    from training.modeling_regionblip import RegionBLIP
    from training.pointbert import PointBERT

    class PointPath(nn.Module):
        point_features = RegionBLIP.point_features

        def __init__(self, config: RegionBLIPConfig):
            super().__init__()
            self.config = config
            self.point_encoder = PointBERT(config)
            self.point_adapter = nn.Linear(config.point_trans_dim, config.qformer_config().encoder_hidden_size)

    torch.manual_seed(0)
    return PointPath(RegionBLIPConfig.preset(preset)).eval()


# ---- workers (one process each) -------------------------------------------------------------------------------

def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure(step) -> dict:
    """Run `step` once; the peak RSS it reached and its rise over the RSS before it, in MiB."""
    before = _status_mib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM (and ru_maxrss) restart from the current RSS
    start = time.perf_counter()
    step()
    seconds = time.perf_counter() - start
    peak = _status_mib("VmHWM")
    return {"rss_before_mib": round(before, 1), "peak_rss_mib": round(peak, 1),
            "peak_rise_mib": round(peak - before, 1),
            "ru_maxrss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "seconds": round(seconds, 2)}


def run_torch(args) -> dict:
    import torch

    from training.pointbert import group_points

    use_knn(args.form)
    model = point_model(args.preset)
    config = model.config
    if args.threads:
        torch.set_num_threads(args.threads)

    def step(points):
        with torch.no_grad():
            if args.stage == "group_points":
                return group_points(points, config.point_num_group, config.point_group_size)
            return model.point_features(points)

    generator = torch.Generator().manual_seed(0)
    step(torch.randn(1, 2 * config.point_num_group, 3, generator=generator))  # lazy initialisation off the peak
    points = torch.randn(args.batch, args.num_points, 3, generator=generator)
    return measure(lambda: step(points))


def run_onnxruntime(args) -> dict:
    import numpy as np
    import onnxruntime

    from training.config import RegionBLIPConfig

    options = onnxruntime.SessionOptions()  # as runtime/onnx_runner.py sets them
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if args.threads:
        options.intra_op_num_threads = args.threads
    session = onnxruntime.InferenceSession(str(args.graph), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    num_group = RegionBLIPConfig.preset(args.preset).point_num_group
    session.run(None, {"points": rng.normal(size=(1, 2 * num_group, 3)).astype(np.float32)})
    points = rng.normal(size=(args.batch, args.num_points, 3)).astype(np.float32)
    return measure(lambda: session.run(None, {"points": points}))


def run_export(args) -> dict:
    """The point_encoder graph, with export/graphs.py's wrapper and export/onnx.py's torch.onnx.export arguments."""
    import warnings

    import numpy as np
    import onnxruntime
    import torch

    from export.graphs import PointEncoder
    from export.onnx import OPSET

    use_knn(args.form)
    module = PointEncoder(point_model(args.preset)).eval()
    num_group = module.model.config.point_num_group
    axes = {"points": {0: "batch", 1: "num_points"}, "point_features": {0: "batch"}}
    start = time.perf_counter()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on Python values; parity below is the real check
        torch.onnx.export(module, (torch.randn(2, max(64, 2 * num_group), 3),), str(args.graph),
                          input_names=["points"], output_names=["point_features"], dynamic_axes=axes,
                          opset_version=OPSET, dynamo=False)
    seconds = time.perf_counter() - start
    points = torch.randn(3, 2 * num_group + 37, 3, generator=torch.Generator().manual_seed(1))
    session = onnxruntime.InferenceSession(str(args.graph), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        error = np.abs(session.run(None, {"points": points.numpy()})[0] - module(points).numpy()).max()
    return {"export_s": round(seconds, 1), "max_abs_ort_vs_torch": float(error),
            "graph_mib": round(args.graph.stat().st_size / 2**20, 1)}


# ---- parent ---------------------------------------------------------------------------------------------------

def run_worker(worker: str, **options) -> dict:
    command = [sys.executable, "-m", "tools.bench_knn", "--worker", worker]
    for name, value in options.items():
        if value is not None:
            command += [f"--{name.replace('_', '-')}", str(value)]
    # tools/ is not installed: the worker finds it from the repository root, whatever the caller's directory.
    done = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if done.returncode != 0:
        raise SystemExit(f"tools.bench_knn: the {worker} worker ({' '.join(command[3:])}) failed:\n"
                         f"{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(args) -> dict:
    from training.config import RegionBLIPConfig

    results = []
    with tempfile.TemporaryDirectory(prefix="regionblip-knn-") as directory:
        for preset in args.presets:
            config = RegionBLIPConfig.preset(preset)
            sizes = {"num_group": config.point_num_group, "group_size": config.point_group_size,
                     "trans_dim": config.point_trans_dim, "depth": config.point_depth}
            for knn in args.knn:
                graph = Path(directory) / f"{preset}-{knn}.onnx"
                export = (run_worker("export", preset=preset, form=knn, graph=graph)
                          if "onnxruntime" in args.backends else None)
                for backend, stage in CASES:
                    if backend not in args.backends:
                        continue
                    for batch in args.batches:
                        peak = run_worker(backend, preset=preset, form=knn, stage=stage, batch=batch,
                                          num_points=args.num_points, threads=args.threads,
                                          graph=graph if backend == "onnxruntime" else None)
                        results.append({"preset": preset, **sizes, "knn": knn, "backend": backend, "stage": stage,
                                        "batch": batch, "num_points": args.num_points, **peak,
                                        **({"export": export} if backend == "onnxruntime" else {})})
    return {"threads": args.threads or os.cpu_count(), "cpu_count": os.cpu_count(), "cases": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench_knn", description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["bench", "blip2-opt-2.7b"],
                        help="model presets whose point-encoder sizes to use")
    parser.add_argument("--batches", nargs="+", type=int, default=[8, 1], help="clouds per call")
    parser.add_argument("--num-points", type=int, default=40000, help="points per cloud (a ScanNet scene)")
    parser.add_argument("--knn", nargs="+", choices=KNN, default=list(KNN), help="distance forms to compare")
    parser.add_argument("--backends", nargs="+", choices=("torch", "onnxruntime"), default=["torch", "onnxruntime"])
    parser.add_argument("--threads", type=int, help="intra-op threads (default: the libraries' own)")
    parser.add_argument("--worker", choices=("torch", "onnxruntime", "export"), help=argparse.SUPPRESS)
    parser.add_argument("--preset", help=argparse.SUPPRESS)
    parser.add_argument("--form", choices=KNN, help=argparse.SUPPRESS)
    parser.add_argument("--stage", choices=("group_points", "point_encoder"), help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--graph", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        result = {"torch": run_torch, "onnxruntime": run_onnxruntime, "export": run_export}[args.worker](args)
        print(json.dumps(result))
        return 0
    if min(args.batches) < 1 or args.num_points < 1:
        print("tools.bench_knn: --batches and --num-points must be at least 1", file=sys.stderr)
        return 2
    print(json.dumps(run(args), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
