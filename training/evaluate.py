"""Evaluate a checkpoint: generate captions and score them with pycocoevalcap (training.metrics), on synthetic
held-out samples (CIDEr / BLEU-4 / ROUGE-L and attribute exact match per modality) or on RegionBLIP's benchmarks
(CIDEr / BLEU-4 / METEOR / ROUGE-L, one prediction per region against all its descriptions: training.benchmarks).

    python -m training.evaluate --ckpt models/default --data synthetic:image_region,pointcloud_region,pointcloud,image \
        --num 200 --seed 1 --out eval.json [--compare-image runs/default/blip2/final]
    python -m training.evaluate --ckpt models/default --data synthetic:image_region,image,pointcloud_region,pointcloud \
        --variations all --num 200 --seed 20 --out variations.json
    python -m training.evaluate --ckpt CKPT --data refcoco:test,scanrefer:val,cap3d:test --instances-json ... \
        --refs-json ... --image-dir ... --scanrefer-json ... --scannet-dir ... --captions-file ... --points-dir ...

Benchmarks decode with the release's settings (contract.generation.RELEASE_EVALUATION) unless --beams /
--max-new-tokens / --min-new-tokens say otherwise, and print a table laid out as RegionBLIP's README.

Held-out samples come from the synthetic `eval` split (never seen in training: it has its own seeds), at indices
drawn by --seed.
--variations clean,white,...|all scores the same held-out indices once per named variation of the synthetic world
(training/data/variations.py: backgrounds, off-grid placement, overlap, loose boxes, frame sizes; ground height, tilt,
clutter, noise, density), each on the modalities of --data that it changes ("clean" and "varied" on all of them), so
a model that only works in the clean world cannot pass unnoticed.
--compare-image checks that the image modality of --ckpt and of another checkpoint (the stage-1 BLIP-2) give
bit-identical logits and captions, as RegionBLIP's frozen image path must. Point clouds hold the checkpoint's
object_num_points / scene_num_points.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from contract.cli import OneLineParser
from contract.generation import RELEASE_EVALUATION, SYNTHETIC_EVALUATION
from contract.modalities import IMAGE, MODALITIES

from . import benchmarks
from .config import RegionBLIPConfig
from .data.variations import VARIATIONS
from .metrics import attribute_exact_match, caption_metrics, tokenizer_name
from .modeling_regionblip import RegionBLIP
from .tasks import collate, frame_inputs, make_dataset, tokenize_captions
from .tokenizer import load_tokenizer
from .trainer_config import TaskConfig

EVAL_SOURCE = "synthetic"  # held-out scenes with ground-truth attributes
EVAL_POOL = 1_000_000  # held-out indices are drawn from this range of the eval split
CAPTION_METRICS = ("CIDEr", "Bleu_4", "ROUGE_L")


def parse_data_spec(spec: str) -> tuple[str, list[str]]:
    """'synthetic:image_region,pointcloud' -> ('synthetic', ['image_region', 'pointcloud'])."""
    source, _, names = spec.partition(":")
    if source != EVAL_SOURCE:
        raise ValueError(f"--data {spec!r}: unknown source {source!r}; write {EVAL_SOURCE}:<modality>,... "
                         f"with modalities from {list(MODALITIES)}")
    modalities = [m.strip() for m in names.split(",") if m.strip()]
    unknown = [m for m in modalities if m not in MODALITIES]
    if not modalities or unknown:
        raise ValueError(f"--data {spec!r}: modalities must be a comma-separated subset of {list(MODALITIES)}"
                         + (f", got unknown {unknown}" if unknown else ""))
    if len(set(modalities)) != len(modalities):
        raise ValueError(f"--data {spec!r} names a modality twice")
    return source, modalities


def held_out_indices(num: int, seed: int) -> list[int]:
    return sorted(int(i) for i in np.random.default_rng(seed).choice(EVAL_POOL, size=num, replace=False))


def eval_dataset(source: str, modality: str, image_size: int, model_config: RegionBLIPConfig,
                 variation: str = "clean"):
    return make_dataset(TaskConfig(modality=modality, data=source, length=EVAL_POOL, image_size=image_size,
                                   variation=variation), "eval", model_config)


def parse_variations(spec: str) -> list[str]:
    """'all' -> every variation; 'clean,white' -> those, checked."""
    names = list(VARIATIONS) if spec.strip() == "all" else [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIATIONS]
    if not names or unknown or len(set(names)) != len(names):
        raise ValueError(f"--variations {spec!r}: give all, or distinct names from {', '.join(VARIATIONS)}"
                         + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
    return names


def variation_modalities(name: str, modalities: list[str]) -> list[str]:
    """The modalities of `modalities` that variation `name` changes (all of them for clean)."""
    changed = [m for m in modalities if VARIATIONS[name].changes(m)]
    return changed if any(VARIATIONS[name].changes(m) for m in MODALITIES) else list(modalities)


def generate_captions(model: RegionBLIP, tokenizer, modality: str, samples: list, *, batch_size: int,
                      generation: dict, progress: bool = False) -> list[str]:
    texts = []
    starts = range(0, len(samples), batch_size)
    for start in tqdm(starts, desc=f"generate {modality}", disable=not progress, leave=False):
        batch = collate(samples[start:start + batch_size], model.config.image_size)
        token_ids = model.generate(modality, **frame_inputs(batch), **generation).token_ids
        texts += [t.strip() for t in tokenizer.batch_decode(token_ids, skip_special_tokens=True)]
    return texts


def score(modality: str, predictions: list[str], samples: list) -> dict:
    references = {i: [s.caption] for i, s in enumerate(samples)}
    # pycocoevalcap's tokenizers drop empty strings unevenly; an empty prediction scores as a lone '.'
    captions = caption_metrics({i: p or "." for i, p in enumerate(predictions)}, references, meteor=False,
                               spice=False)
    exact = attribute_exact_match(predictions, [s.attributes for s in samples], modality)
    return {**{k.removeprefix(f"{modality}/"): v for k, v in exact.items()},
            **{k: captions[k] for k in CAPTION_METRICS}}


@torch.no_grad()
def compare_image_outputs(model: RegionBLIP, other: RegionBLIP, tokenizer, samples: list, *, batch_size: int,
                          generation: dict) -> dict:
    """Whether two checkpoints' image modality agrees bit for bit: LM logits on the reference captions and the
    generated token ids."""
    same_logits = same_tokens = True
    for start in range(0, len(samples), batch_size):
        batch = collate(samples[start:start + batch_size], model.config.image_size)
        text = tokenize_captions(batch["captions"], tokenizer)
        a, b = (m(IMAGE, **text, **frame_inputs(batch)).logits for m in (model, other))
        same_logits &= torch.equal(a, b)
        ta, tb = (m.generate(IMAGE, **frame_inputs(batch), **generation).token_ids for m in (model, other))
        same_tokens &= ta.shape == tb.shape and torch.equal(ta, tb)
    return {"num": len(samples), "identical_logits": bool(same_logits), "identical_tokens": bool(same_tokens)}


def load_checkpoint_dir(directory: str | Path) -> tuple[RegionBLIP, object]:
    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise ValueError(f"{directory} is not a RegionBLIP checkpoint (no config.json): pass the directory that "
                         "training.train wrote, e.g. models/default or runs/default/regionblip/final")
    try:
        return RegionBLIP.from_pretrained(directory), load_tokenizer(directory)
    except json.JSONDecodeError as error:
        raise ValueError(f"{directory / 'config.json'} is not valid JSON ({error}): re-run training or copy the "
                         "checkpoint again") from error
    except (ValueError, FileNotFoundError):
        raise
    except Exception as error:  # safetensors reports a damaged file with its own exception type
        raise ValueError(f"cannot load {directory}: {error}; re-run training or copy the checkpoint again") from error


def evaluate(ckpt: str | Path, data: str, *, num: int, seed: int,
             num_beams: int = SYNTHETIC_EVALUATION.num_beams, max_new_tokens: int = SYNTHETIC_EVALUATION.max_new_tokens,
             min_new_tokens: int = SYNTHETIC_EVALUATION.min_new_tokens, batch_size: int = 32, image_size: int | None = None,
             compare_image: str | Path | None = None, examples: int = 5, progress: bool = False,
             variations: list[str] | None = None) -> dict:
    """Scores per modality on the clean held-out scenes; with `variations`, per variation and modality instead
    (results["variations"][name][modality])."""
    if num < 1 or num > EVAL_POOL:
        raise ValueError(f"--num must be in [1, {EVAL_POOL}], got {num}")
    _check_generation(num_beams, max_new_tokens, min_new_tokens, batch_size)
    if image_size is not None and image_size < 1:
        raise ValueError(f"--image-size is {image_size}: give the synthetic images' size in pixels, >= 1")
    source, modalities = parse_data_spec(data)
    model, tokenizer = load_checkpoint_dir(ckpt)
    image_size = model.config.image_size if image_size is None else image_size
    other = load_checkpoint_dir(compare_image)[0] if compare_image is not None else None
    generation = dict(num_beams=num_beams, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens)
    indices = held_out_indices(num, seed)
    started = time.perf_counter()
    results = {"checkpoint": str(ckpt), "data": data, "num": num, "seed": seed, "generation": generation}

    def scored(modality: str, variation: str) -> dict:
        dataset = eval_dataset(source, modality, image_size, model.config, variation)
        samples = [dataset[i] for i in indices]
        predictions = generate_captions(model, tokenizer, modality, samples, batch_size=batch_size,
                                        generation=generation, progress=progress)
        return {**score(modality, predictions, samples),
                "examples": [{"prediction": p, "reference": s.caption} for p, s in zip(predictions, samples)][:examples]}

    if variations is None:
        results["modalities"] = {modality: scored(modality, "clean") for modality in modalities}
    else:
        results["variations"] = {name: {modality: scored(modality, name)
                                        for modality in variation_modalities(name, modalities)}
                                 for name in variations}
    if other is not None:
        samples = [eval_dataset(source, IMAGE, image_size, model.config)[i] for i in indices]
        results["image_identity"] = {"other": str(compare_image), **compare_image_outputs(
            model, other, tokenizer, samples, batch_size=batch_size, generation=generation)}
    results["wall_s"] = round(time.perf_counter() - started, 1)
    return results


def _check_generation(num_beams: int, max_new_tokens: int, min_new_tokens: int, batch_size: int) -> None:
    if num_beams < 1 or batch_size < 1:
        raise ValueError("--beams and --batch-size must be at least 1")
    if not 0 <= min_new_tokens <= max_new_tokens or max_new_tokens < 1:
        raise ValueError(f"--min-new-tokens {min_new_tokens} and --max-new-tokens {max_new_tokens}: give "
                         "0 <= min <= max and max >= 1")


def evaluate_benchmarks(ckpt: str | Path, data: str, files: dict[str, Path | None], *, num: int | None = None,
                        num_beams: int = RELEASE_EVALUATION.num_beams,
                        max_new_tokens: int = RELEASE_EVALUATION.max_new_tokens,
                        min_new_tokens: int = RELEASE_EVALUATION.min_new_tokens, batch_size: int = 16,
                        label: str | None = None, examples: int = 5, progress: bool = False) -> dict:
    """The benchmarks of `data` ('refcoco:test,scanrefer:val,...') on their files (benchmarks.OPTIONS keys);
    num: the first regions of each only (default all)."""
    if num is not None and num < 1:
        raise ValueError(f"--num is {num}: give at least 1, or leave it out to evaluate every region")
    _check_generation(num_beams, max_new_tokens, min_new_tokens, batch_size)
    chosen = benchmarks.parse_benchmarks(data)
    checked = benchmarks.check_files(chosen, files)
    model, tokenizer = load_checkpoint_dir(ckpt)
    generation = dict(num_beams=num_beams, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens)
    started = time.perf_counter()
    results = {"checkpoint": str(ckpt), "data": data, "label": label, "generation": generation,
               "tokenizer": tokenizer_name(), "benchmarks": []}
    for benchmark in chosen:
        dataset, regions = benchmarks.load(benchmark, checked[benchmark.source], model.config.object_num_points,
                                           model.config.scene_num_points)
        regions = regions[:num]
        predictions = []
        # a batch's samples are read when it is described: a whole ScanRefer split of clouds would not fit in memory
        for start in tqdm(range(0, len(regions), batch_size), desc=benchmark.name, disable=not progress):
            samples = [dataset[r.index] for r in regions[start:start + batch_size]]
            predictions += generate_captions(model, tokenizer, benchmark.modality, samples, batch_size=batch_size,
                                             generation=generation)
        results["benchmarks"].append(benchmarks.result(benchmark, checked[benchmark.source], dataset, regions,
                                                       predictions, examples))
    results["wall_s"] = round(time.perf_counter() - started, 1)
    return results


def variation_table(results: dict) -> str:
    """Exact match per variation (rows) and modality (columns); '-' where a variation leaves a modality clean."""
    modalities = list(dict.fromkeys(m for scores in results["variations"].values() for m in scores))
    lines = [f"{'variation':<18}" + "".join(f" {m:>17}" for m in modalities)]
    for name, scores in results["variations"].items():
        lines.append(f"{name:<18}" + "".join(f" {scores[m]['exact_match']:>17.3f}" if m in scores else f" {'-':>17}"
                                             for m in modalities))
    return "\n".join(lines)


def summary(results: dict) -> str:
    if "variations" in results:
        return variation_table(results)
    lines = [f"{'modality':<18} {'exact':>7} {'CIDEr':>7} {'BLEU-4':>7} {'ROUGE-L':>7}"]
    for modality, r in results["modalities"].items():
        lines.append(f"{modality:<18} {r['exact_match']:>7.3f} {r['CIDEr']:>7.3f} {r['Bleu_4']:>7.3f} "
                     f"{r['ROUGE_L']:>7.3f}")
    if "image_identity" in results:
        i = results["image_identity"]
        lines.append(f"image vs {i['other']}: identical logits {i['identical_logits']}, "
                     f"identical captions {i['identical_tokens']} ({i['num']} images)")
    return "\n".join(lines)


def _check_output(out: Path | None) -> None:
    """Fail before evaluating, not after, where --out cannot be written."""
    if out is None:
        return
    if out.is_dir():
        raise ValueError(f"--out {out} is a directory: give the results file to write, e.g. {out / 'eval.json'}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"--out {out}: cannot create {out.parent} ({error.strerror}): choose a writable path") \
            from error


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m training.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="checkpoint directory (config.json, model.safetensors, "
                                                      "tokenizer.json)")
    parser.add_argument("--data", required=True, help="synthetic:MODALITY[,MODALITY...], e.g. synthetic:image,"
                        "pointcloud; or benchmarks SOURCE:SPLIT[,...] of " + ", ".join(benchmarks.SPLITS)
                        + ", e.g. refcoco:test,scanrefer:val,cap3d:test")
    for key, option in benchmarks.OPTIONS.items():
        parser.add_argument(option, dest=key, type=Path, default=None, help="benchmark file (training.benchmarks)")
    parser.add_argument("--label", default=None, help="benchmarks: a title for the table and the JSON, e.g. "
                        "'fixture files, not the benchmark data'")
    parser.add_argument("--num", type=int, default=None,
                        help="synthetic: held-out samples per modality (default 100); benchmarks: the first N "
                             "regions of each (default all)")
    parser.add_argument("--seed", type=int, default=0, help="which held-out samples")
    parser.add_argument("--out", type=Path, default=None, help="results JSON to write")
    decoding = "default: contract.generation's SYNTHETIC_EVALUATION, or RELEASE_EVALUATION for benchmarks"
    parser.add_argument("--beams", type=int, default=None, help=decoding)
    parser.add_argument("--max-new-tokens", type=int, default=None, help=decoding)
    parser.add_argument("--min-new-tokens", type=int, default=None, help=decoding)
    parser.add_argument("--batch-size", type=int, default=None, help="default 32 (synthetic), 16 (benchmarks)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="synthetic images are drawn at this size (default: the model's input size)")
    parser.add_argument("--compare-image", default=None, metavar="DIR",
                        help="another checkpoint whose image modality must match bit for bit (stage 1)")
    parser.add_argument("--variations", default=None, metavar="NAMES",
                        help="synthetic: score per variation of the world, 'all' or names from "
                             + ", ".join(VARIATIONS))
    parser.add_argument("--threads", type=int, default=2)
    try:
        args = parser.parse_args(argv)
        if args.threads < 1:
            raise ValueError(f"--threads is {args.threads}: give at least 1")
        _check_output(args.out)
        torch.set_num_threads(args.threads)
        on_benchmarks = benchmarks.is_benchmark_spec(args.data)
        results = (_run_benchmarks if on_benchmarks else _run_synthetic)(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"training.evaluate: error: {error}".replace("\n", " "), file=sys.stderr)
        return 2
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(benchmarks.table(results) if on_benchmarks else summary(results))
    return 0


def _or(value, default):
    return default if value is None else value


def _decoding(args, defaults) -> dict:
    """The data's default decoding where the command line leaves a setting out."""
    return dict(num_beams=_or(args.beams, defaults.num_beams),
                max_new_tokens=_or(args.max_new_tokens, defaults.max_new_tokens),
                min_new_tokens=_or(args.min_new_tokens, defaults.min_new_tokens))


def _run_synthetic(args) -> dict:
    given = [benchmarks.OPTIONS[key] for key in benchmarks.OPTIONS if getattr(args, key) is not None]
    if given or args.label is not None:
        raise ValueError(f"{', '.join(given) or '--label'} applies to benchmark data, not {args.data!r}: drop it")
    return evaluate(args.ckpt, args.data, num=100 if args.num is None else args.num, seed=args.seed,
                    **_decoding(args, SYNTHETIC_EVALUATION), batch_size=_or(args.batch_size, 32),
                    image_size=args.image_size, compare_image=args.compare_image, progress=True,
                    variations=None if args.variations is None else parse_variations(args.variations))


def _run_benchmarks(args) -> dict:
    for option, value in (("--image-size", args.image_size), ("--compare-image", args.compare_image),
                          ("--variations", args.variations)):
        if value is not None:
            raise ValueError(f"{option} applies to synthetic data only: drop it for --data {args.data}")
    return evaluate_benchmarks(args.ckpt, args.data, {key: getattr(args, key) for key in benchmarks.OPTIONS},
                               num=args.num, **_decoding(args, RELEASE_EVALUATION),
                               batch_size=_or(args.batch_size, 16), label=args.label, progress=True)


if __name__ == "__main__":
    sys.exit(main())
