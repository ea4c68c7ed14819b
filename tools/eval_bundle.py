"""python -m tools.eval_bundle --bundle bundles/default [--bundle bundles/default-int8 ...] --num 200 --seed 1

training.evaluate's held-out synthetic set, scored the same way (attribute exact match, CIDEr, BLEU-4, ROUGE-L),
but described through each bundle's graphs in ONNX Runtime: what a reduced-precision bundle (export.onnx
--precision / --quantize) costs in accuracy, next to the fp32 bundle of the same checkpoint. The samples'
inputs are the model's own preprocessed tensors, so only the graphs differ. Prints one JSON document.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from contract.generation import SYNTHETIC_EVALUATION
from contract.modalities import BY_NAME, MODALITIES
from runtime import Describer
from training.config import RegionBLIPConfig
from training.evaluate import EVAL_SOURCE, eval_dataset, held_out_indices, score
from training.tasks import collate


def describe_batch(describer: Describer, modality: str, batch: dict) -> list[str]:
    """One caption per sample: each sample is its own frame (and its one region)."""
    frames = (batch["points"] if BY_NAME[modality].points else batch["pixel_values"]).numpy()
    boxes = frame_index = None
    if BY_NAME[modality].region:
        boxes = batch["boxes"].numpy()
        frame_index = np.arange(len(boxes), dtype=np.int64)
    decoded, _ = describer.engine.generate(modality, frames, describer.settings, boxes, frame_index)
    return [describer.tokenizer.decode(list(row.token_ids), skip_special_tokens=True).strip() for row in decoded]


def evaluate_bundle(bundle: Path, modalities: list[str], indices: list[int], batch_size: int, threads: int | None,
                    decoding: dict) -> dict:
    describer = Describer.from_bundle(bundle, threads=threads)
    describer.configure(**decoding)
    manifest = describer.engine.bundle.manifest
    config = RegionBLIPConfig.from_dict(manifest.model)
    result = {"bundle": str(bundle), "precision": manifest.precision, "modalities": {}}
    started = time.perf_counter()
    for modality in modalities:
        if modality not in describer.modalities:
            continue
        dataset = eval_dataset(EVAL_SOURCE, modality, config.image_size, config)
        samples = [dataset[i] for i in indices]
        predictions = []
        for start in tqdm(range(0, len(samples), batch_size), desc=f"{bundle.name} {modality}", leave=False):
            predictions += describe_batch(describer, modality, collate(samples[start:start + batch_size],
                                                                       config.image_size))
        scores = score(modality, predictions, samples)
        result["modalities"][modality] = {"exact_match": scores["exact_match"], "CIDEr": scores["CIDEr"],
                                          "predictions": predictions}
    result["wall_s"] = round(time.perf_counter() - started, 1)
    return result


def agreement(results: list[dict]) -> None:
    """Each bundle's share of predictions identical to the first bundle's, per modality (in place)."""
    reference = results[0]["modalities"]
    for result in results:
        for modality, scores in result["modalities"].items():
            same = [a == b for a, b in zip(scores["predictions"], reference[modality]["predictions"])]
            scores["same_text_as_first"] = float(np.mean(same))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.eval_bundle", description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", action="append", type=Path, required=True,
                        help="bundle directory; repeat to compare (the first is the reference)")
    parser.add_argument("--modalities", default=",".join(MODALITIES))
    parser.add_argument("--num", type=int, default=200, help="held-out samples per modality")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--beams", type=int, default=SYNTHETIC_EVALUATION.num_beams)
    parser.add_argument("--max-new-tokens", type=int, default=SYNTHETIC_EVALUATION.max_new_tokens)
    parser.add_argument("--min-new-tokens", type=int, default=SYNTHETIC_EVALUATION.min_new_tokens)
    args = parser.parse_args(argv)
    modalities = [m for m in args.modalities.split(",") if m]
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown or args.num < 1 or args.batch_size < 1 or args.beams < 1:
        print(f"tools.eval_bundle: bad arguments (unknown modalities {unknown}, or --num/--batch-size/--beams "
              "below 1): see --help", file=sys.stderr)
        return 2
    decoding = dict(num_beams=args.beams, max_new_tokens=args.max_new_tokens, min_new_tokens=args.min_new_tokens)
    indices = held_out_indices(args.num, args.seed)
    try:
        results = [evaluate_bundle(bundle, modalities, indices, args.batch_size, args.threads, decoding)
                   for bundle in args.bundle]
    except ValueError as error:
        print(f"tools.eval_bundle: {error}", file=sys.stderr)
        return 2
    agreement(results)
    for result in results:
        for scores in result["modalities"].values():
            del scores["predictions"]
    print(json.dumps({"num": args.num, "seed": args.seed, "generation": decoding, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
