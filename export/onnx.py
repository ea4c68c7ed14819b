"""python -m export.onnx --ckpt DIR --out BUNDLE [--modalities image_region,...] [--precision fp16 | --quantize int4]

Exports a RegionBLIP checkpoint to an ONNX bundle (export/bundle.py), graph by graph: build, export, check, free.
Each graph is built from a model holding only the weights it reads (export/checkpoint.py: the others stay on
PyTorch's meta device), exported without its weights, its weights then written one by one into a data file of
its own (export/external_data.py), checked with onnx.checker, and run in ONNX Runtime against PyTorch on fresh
inputs at sizes other than the export's, after the PyTorch module is freed. At the release's size (ViT-g +
OPT-2.7B) this keeps the process under 16 GB. --precision fp16 or --quantize int8/int4 then rewrites the vision
and LLM graphs (export/quantize.py). A closing table gives each graph's size (graph and data file), export time,
largest absolute difference (for a reduced-precision graph: against its own fp32 export) and the process's
peak memory so far.
"""
import argparse
import gc
import os
import resource
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from contract.cli import OneLineParser
from contract.generation import RELEASE_EVALUATION, Decoding, GenerationSettings
from contract.manifest import FORMAT_VERSION, GraphSpec, LanguageModelLayout, Manifest, Preprocess, Source, sha256
from contract.modalities import MODALITIES
from export.bundle import copy_tokenizer, staging_directory, write_manifest
from export.checkpoint import CheckpointWeights
from export.external_data import attach_weights, graph_files
from export.graphs import Graph, build_graph, graph_names, llm_adapters, weight_prefixes
from export.quantize import PRECISIONS, QUANTIZE, check_memory, reduce_precision, reduces
from export.trt_profiles import random_padding
from export.vision_resize import set_image_size
from training.modeling_regionblip import RegionBLIP

OPSET = 18
PARITY_TOLERANCE = 1e-4
# Sizes of the dynamic axes for the parity check: all differ from the tracing examples.
CHECK_SIZES = {"batch": 3, "frames": 2, "regions": 5, "prefix": 4, "tokens": 3, "past": 6}


def integer_at_least(minimum: int):
    """An argparse type: an integer >= minimum."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"got {value}, expected an integer >= {minimum}")
        return value
    return parse


def positive_number(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"got {text}, expected a finite number > 0")
    return value


def decoding_from(args) -> Decoding:
    """The generation defaults the parsed arguments ask for; ValueError where min exceeds max new tokens."""
    if args.min_new_tokens > args.max_new_tokens:
        raise ValueError(f"--min-new-tokens {args.min_new_tokens} exceeds --max-new-tokens {args.max_new_tokens}: "
                         "give at most as many as --max-new-tokens")
    return Decoding(max_new_tokens=args.max_new_tokens, min_new_tokens=args.min_new_tokens,
                    num_beams=args.num_beams)


def parse_modalities(text: str | None) -> list[str]:
    if not text:
        return list(MODALITIES)
    modalities = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown or not modalities:
        raise ValueError(f"unknown modalities {unknown}: choose from {', '.join(MODALITIES)}")
    return [m for m in MODALITIES if m in modalities]  # canonical order, no duplicates


def check_inputs(graph: Graph, vocab_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Random inputs for `graph` with every dynamic axis at a size the export did not trace."""
    sizes = dict(CHECK_SIZES)
    for spec, example in zip(graph.inputs, graph.example):  # axes whose size the model fixes keep it
        for axis, size in enumerate(spec.shape):
            if isinstance(size, str) and size not in sizes:
                sizes[size] = example.shape[axis] + (37 if size == "num_points" else 0)
    tensors = []
    for spec in graph.inputs:
        shape = [sizes[s] if isinstance(s, str) else s for s in spec.shape]
        if spec.name == "input_ids":
            tensors.append(torch.randint(0, vocab_size, shape, generator=generator))
        elif spec.name == "frame_index":
            tensors.append(torch.randint(0, sizes["frames"], shape, generator=generator))
        elif spec.name == "adapter_ids":
            tensors.append(torch.randint(0, len(graph.module.opt.adapters) + 1, shape, generator=generator))
        elif spec.name == "padding":
            tensors.append(torch.from_numpy(random_padding(shape[0], sizes["past"] + sizes["prefix"] + sizes["tokens"],
                                                           np.random.default_rng(int(generator.initial_seed())))))
        elif spec.name == "boxes":
            corners = torch.rand(shape, generator=generator)
            tensors.append(torch.cat([corners[:, :2] * 0.5, 0.5 + corners[:, 2:] * 0.5], 1)
                           if shape[1] == 4 else corners)
        else:
            tensors.append(torch.randn(shape, generator=generator))
    return tensors


def peak_rss_gb() -> float:
    """This process's peak resident memory so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_graph(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def largest_difference(outputs, expected) -> float:
    """Largest |difference| over the float outputs. Integer outputs (the llm graph's top_ids) follow from float
    ones that are compared (top_log_probs), and two near-equal candidates may legitimately swap."""
    return max(float(np.abs(np.asarray(out, np.float64) - ref).max()) for out, ref in zip(outputs, expected)
               if np.issubdtype(ref.dtype, np.floating) and ref.size)


def export_graph(graph: Graph, staging: Path, vocab_size: int) -> tuple[Path, dict, list[np.ndarray]]:
    """Export one graph into staging as <name>.onnx + <name>.onnx.data, check it with onnx.checker, and run
    PyTorch on fresh inputs: (its path, those feeds, PyTorch's outputs). The caller frees the module before
    ONNX Runtime loads the graph, so that the two copies of its weights are never held at once."""
    import onnx

    scratch = staging / f".{graph.name}.scratch"
    scratch.mkdir()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the tracer's notes on Python values; parity below is the real check
            # The graph alone: weights become named inputs that attach_weights turns into initializers, one at a
            # time (the exporter's own folding would hold every weight three times over).
            torch.onnx.export(graph.module, graph.example, str(scratch / f"{graph.name}.onnx"),
                              input_names=[s.name for s in graph.inputs],
                              output_names=[s.name for s in graph.outputs], dynamic_axes=graph.dynamic_axes(),
                              opset_version=OPSET, dynamo=False, export_params=False, do_constant_folding=False)
        weights = dict(graph.module.named_parameters()) | dict(graph.module.named_buffers())
        path = attach_weights(scratch / f"{graph.name}.onnx", weights, staging)[0]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    graph.module.eval()  # export restores the wrapper's own (training) mode onto every submodule
    onnx.checker.check_model(str(path))
    inputs = check_inputs(graph, vocab_size, torch.Generator().manual_seed(0))
    feeds = {spec.name: tensor.numpy() for spec, tensor in zip(graph.inputs, inputs)}
    with torch.no_grad():
        expected = graph.module(*inputs)
    expected = [t.numpy() for t in (expected if isinstance(expected, tuple) else (expected,))]
    return path, feeds, expected


def files_mb(path: Path) -> float:
    return sum(file.stat().st_size for file in graph_files(path)) / 2**20


def generation_defaults(model: RegionBLIP, decoding: Decoding) -> GenerationSettings:
    """The bundle's generation settings: the model's token ids, decoded as `decoding` says."""
    text = model.config.text_config()
    longest = model.config.num_query_tokens + 1 + decoding.max_new_tokens  # soft prompt + BOS + new tokens
    if longest > text.max_position_embeddings:
        raise ValueError(f"--max-new-tokens {decoding.max_new_tokens} does not fit the model: its "
                         f"{model.config.num_query_tokens} query tokens, BOS and the new tokens make {longest}, above "
                         f"its {text.max_position_embeddings} positions; give at most "
                         f"{text.max_position_embeddings - model.config.num_query_tokens - 1}")
    return GenerationSettings(bos_token_id=text.bos_token_id, eos_token_id=model.config.newline_token_id,
                              pad_token_id=text.pad_token_id, **vars(decoding))


def export_bundle(checkpoint: Path, out: Path, modalities: list[str], decoding: Decoding = Decoding(),
                  show_progress: bool = True, precision: str = "fp32", image_size: int | None = None) -> list:
    """Write the bundle; return the closing table's rows (graph, precision, MB, seconds, error, peak GB).
    `image_size` (pixels) serves images of another size than the checkpoint's, its ViT position embeddings
    interpolated as transformers' interpolate_pos_encoding does (export/vision_resize.py)."""
    if Path(out).exists() and not Path(out).is_dir():
        raise ValueError(f"--out {out} is a file: give the bundle's directory (replaced if present)")
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    source = CheckpointWeights(checkpoint)
    reduced = [source.fp32_bytes(weight_prefixes(name, source.config))
               for name in graph_names(modalities) if reduces(name, precision)]
    check_memory(precision, max(reduced, default=0))
    checkpoint, out = Path(checkpoint), Path(out)

    def model_for(name: str | None) -> RegionBLIP:
        """The model with graph `name`'s weights loaded (none for None), at the export's image size."""
        model = source.model(weight_prefixes(name, source.config) if name else ())
        if image_size is not None:
            set_image_size(model, image_size)
        return model

    model = model_for(None)  # weightless: its config and generation settings
    generation = generation_defaults(model, decoding)
    config, text = model.config, model.config.text_config()
    rows, checks, manifest_graphs = [], {}, {}
    with staging_directory(out) as staging:
        for name in tqdm(graph_names(modalities), desc="export", unit="graph",
                         disable=None if show_progress else True):
            start = time.perf_counter()
            graph = build_graph(model_for(name), name, modalities)
            path, feeds, expected = export_graph(graph, staging, text.vocab_size)
            manifest_graphs[name] = GraphSpec(file=path.name, inputs=list(graph.inputs), outputs=list(graph.outputs))
            del graph  # and with it the model: its weights are in the data file now
            gc.collect()
            error = largest_difference(run_graph(path, feeds), expected)
            if error > PARITY_TOLERANCE:
                raise RuntimeError(f"graph {name}: ONNX Runtime differs from PyTorch by {error:.2e} "
                                   f"(> {PARITY_TOLERANCE}): the export is wrong, please report it")
            rows.append((name, "fp32", files_mb(path), time.perf_counter() - start, error, peak_rss_gb()))
            if reduces(name, precision):
                checks[name] = (feeds, expected)
        copy_tokenizer(checkpoint, staging)
        adapters = llm_adapters(modalities)
        for name, (feeds, expected) in checks.items():
            start, path = time.perf_counter(), staging / manifest_graphs[name].file
            reduce_precision(path, precision)
            error = largest_difference(run_graph(path, feeds), expected)
            rows.append((name, precision, files_mb(path), time.perf_counter() - start, error, peak_rss_gb()))
        write_manifest(staging, Manifest(
            format=FORMAT_VERSION,
            model=config.to_dict(),
            modalities=modalities,
            preprocess=Preprocess(image_size=config.image_size, object_num_points=config.object_num_points,
                                  scene_num_points=config.scene_num_points),
            generation=generation,
            llm=LanguageModelLayout(
                stacked=len(modalities) > 1, adapters=adapters,
                adapter_ids={m: (adapters.index(m) if m in adapters else len(adapters)) for m in modalities},
                num_layers=text.num_hidden_layers, num_heads=text.num_attention_heads,
                head_dim=text.hidden_size // text.num_attention_heads),
            graphs=manifest_graphs,
            precision=precision,
            exporter=_versions(),
            # Relative to the bundle, so that a bundle moved together with its checkpoint still finds it.
            source=Source(model_sha256=sha256(checkpoint / "model.safetensors"),
                          checkpoint=os.path.relpath(checkpoint.resolve(), out.resolve())),
        ))
    return rows


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    import onnx
    import transformers

    try:
        ours = version("regionblip_ros")
    except PackageNotFoundError:
        ours = "source tree"
    return {"regionblip_ros": ours, "torch": torch.__version__, "transformers": transformers.__version__,
            "onnx": onnx.__version__, "opset": OPSET}


def format_table(rows: list) -> str:
    lines = [f"{'graph':<28}{'precision':>10}{'size MB':>10}{'seconds':>9}{'max |ort-torch|':>17}{'peak GB':>9}"]
    lines += [f"{name:<28}{precision:>10}{size:>10.2f}{seconds:>9.1f}{error:>17.2e}{peak:>9.2f}"
              for name, precision, size, seconds, error, peak in rows]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m export.onnx", description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, type=Path, help="checkpoint directory (save_pretrained)")
    parser.add_argument("--out", required=True, type=Path, help="bundle directory to write (replaced if present)")
    parser.add_argument("--modalities", help=f"comma-separated subset of {','.join(MODALITIES)} (default: all)")
    defaults = Decoding()
    parser.add_argument("--max-new-tokens", type=integer_at_least(1), default=defaults.max_new_tokens,
                        help=f"generation default (default {defaults.max_new_tokens})")
    parser.add_argument("--min-new-tokens", type=integer_at_least(0), default=defaults.min_new_tokens,
                        help=f"generation default (default {defaults.min_new_tokens}; the released evaluation used "
                             f"{RELEASE_EVALUATION.min_new_tokens})")
    parser.add_argument("--num-beams", type=integer_at_least(1), default=defaults.num_beams,
                        help=f"generation default (default {defaults.num_beams}, greedy; the released evaluation "
                             f"used {RELEASE_EVALUATION.num_beams})")
    parser.add_argument("--image-size", type=integer_at_least(1), default=None,
                        help="serve images of this many pixels a side (a multiple of the ViT's patch size), the "
                             "position embeddings interpolated as transformers' interpolate_pos_encoding does "
                             "(default: the checkpoint's; the release evaluates its 224 px weights at 364)")
    parser.add_argument("--precision", choices=("fp32", "fp16"), default="fp32",
                        help="float precision of the vision and LLM graphs (default fp32; fp16 keeps Softmax and "
                             "the graphs' inputs and outputs fp32)")
    parser.add_argument("--quantize", choices=QUANTIZE, default=None,
                        help="int8/int4: weight-only, block-wise quantization of the vision and LLM graphs' MatMul "
                             "weights (ONNX Runtime's MatMulNBits; activations stay fp32). -a8: the kernels also "
                             "multiply in int8, activations quantized per block: faster when compute-bound, less "
                             "exact. int8-dynamic: ONNX Runtime's dynamic quantization of the vision, Q-Former and "
                             "LLM graphs, int8 GEMMs (AMX/VNNI): the fastest on an x86 CPU robot")
    return parser


def precision_from(args) -> str:
    """The one precision the bundle's vision and LLM graphs get: --precision, or --quantize over fp32."""
    if args.quantize and args.precision != "fp32":
        raise ValueError(f"--quantize {args.quantize} rewrites fp32 weights: drop --precision {args.precision}")
    return args.quantize or args.precision


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        modalities = parse_modalities(args.modalities)
        rows = export_bundle(args.ckpt, args.out, modalities, decoding_from(args), show_progress=True,
                             precision=precision_from(args), image_size=args.image_size)
    except ValueError as error:
        print(f"export.onnx: {error}", file=sys.stderr)
        return 2
    print(format_table(rows))
    print(f"bundle written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
