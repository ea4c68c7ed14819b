"""Describer: regions of images and point clouds in, Description records out. No ROS.

    describer = Describer.from_bundle("bundles/default")            # ONNX Runtime, CPU
    describer.describe_image_regions(image_rgb_uint8, [[x1, y1, x2, y2], ...])
    describer.describe_point_regions(points_nx3, corners_rx8x3)
    describer.describe_point_objects([object_points, ...])
    describer.describe_images([image, ...])
    describer.describe_image_regions(image, boxes, prompts=["Question: what colour is it? Answer:", ""])

Each call takes `prompts`: None, or one str per region (or image), "" for none. A prompt goes after the soft prompt
and BOS, as BLIP-2 places a text prompt (runtime/prompts.py), and a frame's regions decode in one batch whatever their
prompts, each exactly as it would alone. A prompt of more tokens than a prompt may have refuses its region, with a
`problem` that says so; a bundle exported before prompts refuses any prompt (ValueError).

A frame's features are computed once and all of its regions decode in one batch. A box that cannot be
described (NaN, outside the image, not finite in float32) gets a Description with its `problem` and no text; the
frame's other boxes are described as usual. A region whose scores come out non-finite (NaN or inf, e.g. from
coordinates near float32's limit) gets a `problem` too, never an empty text passed off as a description.

`describer.cancel()`, from any thread, makes the call in progress raise runtime.Cancelled at its next decode step,
and every later call at once: a node shutting down does not wait for a long job.
"""
import math
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from contract.generation import GenerationSettings, prompt_token_limit
from contract.manifest import REEXPORT, Preprocess
from contract.modalities import MODALITIES
from runtime import preprocess
from runtime.bundle import QUICK, Bundle, BundleError, load_bundle
from runtime.decoding import Cancelled, Decoded
from runtime.description import Description
from runtime.prompts import check_prompts, encode_prompt

BACKENDS = ("onnxruntime", "tensorrt", "torch")


class Describer:
    def __init__(self, engine, tokenizer_file: Path, settings: GenerationSettings, preprocessing: Preprocess,
                 modalities: list[str], model: dict):
        """`model`: the model's config as a dict (RegionBLIPConfig.to_dict(), as the manifest records it): its
        query tokens and positions bound the text prompts."""
        from tokenizers import Tokenizer

        self.engine = engine
        self.backend = engine.backend
        try:
            self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        except Exception as error:  # the tokenizers library raises a bare Exception for a damaged file
            raise BundleError(f"tokenizer {tokenizer_file} cannot be read ({error}): the bundle or checkpoint is "
                              f"damaged; {REEXPORT}") from error
        self.settings = settings
        self.image_size = preprocessing.image_size
        self.object_num_points = preprocessing.object_num_points
        self.scene_num_points = preprocessing.scene_num_points
        self.modalities = modalities
        self.num_query_tokens = model["num_query_tokens"]
        self.max_positions = model["text"]["max_position_embeddings"]
        self._cancelled = threading.Event()

    @classmethod
    def from_bundle(cls, path: str | Path, backend: str = "onnxruntime", device: str = "cpu",
                    threads: int | None = None, verify: str = QUICK) -> "Describer":
        """A describer over an exported bundle (python -m export.onnx / export.trt); `verify` as load_bundle's.
        `threads` (ONNX Runtime's intra-op threads): None takes the count measured for this bundle on this machine
        (runtime/threads.py, python -m runtime.cli --tune-threads), else ONNX Runtime's default (all cores)."""
        if backend not in BACKENDS:
            raise ValueError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
        bundle = load_bundle(path, verify=verify)
        if backend == "torch":
            return cls.from_checkpoint(bundle.checkpoint(), device=device)
        from runtime.graph_engine import GraphEngine

        if backend == "tensorrt":
            from runtime.tensorrt_runner import TensorRTRunner
            runner = TensorRTRunner(bundle, device=device)
        else:
            from runtime.onnx_runner import OnnxRunner
            from runtime.threads import recorded_threads
            threads = threads or (recorded_threads(bundle.path) if device == "cpu" else None)
            runner = OnnxRunner(bundle, device=device, threads=threads)
        return cls._from_manifest(GraphEngine(bundle, runner), bundle)

    @classmethod
    def from_checkpoint(cls, directory: str | Path, device: str = "cpu", **engine_options) -> "Describer":
        """The torch backend over a training checkpoint (imports training/, needs torch); `engine_options`: the
        TorchEngine's decoder, precision and cuda_graphs (runtime/torch_engine.py)."""
        from runtime.torch_engine import TorchEngine

        directory = Path(directory)
        engine = TorchEngine(directory, device=device, **engine_options)
        config = engine.model.config
        text = config.text_config()
        settings = GenerationSettings(bos_token_id=text.bos_token_id, eos_token_id=config.newline_token_id,
                                      pad_token_id=text.pad_token_id)
        preprocessing = Preprocess(image_size=config.image_size, object_num_points=config.object_num_points,
                                   scene_num_points=config.scene_num_points)
        return cls(engine, directory / "tokenizer.json", settings, preprocessing, list(MODALITIES), config.to_dict())

    @classmethod
    def _from_manifest(cls, engine, bundle: Bundle) -> "Describer":
        return cls(engine, bundle.tokenizer_file, bundle.manifest.generation, bundle.manifest.preprocess,
                   bundle.modalities, bundle.manifest.model)

    def cancel(self) -> None:
        """Stop the call in progress at its next decode step, and refuse every later call (raises Cancelled)."""
        self._cancelled.set()

    def configure(self, **settings) -> None:
        """Change generation settings (num_beams, max_new_tokens, min_new_tokens) for later calls."""
        self.settings = replace(self.settings, **settings)

    def encode_prompt(self, prompt: str) -> tuple[int, ...]:
        """A text prompt's token ids (BOS not included), as a call would decode it; ValueError, saying how to fix it,
        for one of more tokens than a prompt may have under the current settings."""
        limit = prompt_token_limit(self.num_query_tokens, self.max_positions, self.settings.max_new_tokens)
        return encode_prompt(self.tokenizer, prompt, limit)

    # ---- the four ways in ---------------------------------------------------------------------------------------

    def describe_image_regions(self, image: np.ndarray, boxes_xyxy_px, min_region_px: float = 0.0,
                               prompts=None) -> list[Description]:
        """One description per pixel box (x1, y1, x2, y2) of an (H, W, 3) uint8 RGB image, in order. Boxes partly
        outside the image are clipped; a box covering none of it, or less than min_region_px of it in width or
        height, or holding a NaN, gets a Description whose `problem` says so. `prompts`: None, or one text prompt
        per box ("" for none)."""
        start = time.perf_counter()
        boxes, problems = preprocess.preprocess_boxes(boxes_xyxy_px, preprocess.check_image(image).shape,
                                                      min_region_px)
        prompt_ids = self._prompt_ids(prompts, len(boxes), problems)
        if len(boxes) == len(problems):
            return self._refused(problems)
        pixels = preprocess.preprocess_image(image, self.image_size)[None]
        return self._run_rows("image_region", pixels, start, problems, prompt_ids, boxes)

    def describe_point_regions(self, points: np.ndarray, corners, prompts=None) -> list[Description]:
        """One description per 3D box, given as (R, 8, 3) corners in the cloud's frame and units, in order; a box
        whose corners are not all finite gets a Description whose `problem` says so. `prompts`: None, or one text
        prompt per box ("" for none)."""
        start = time.perf_counter()
        corners, problems = preprocess.check_corners(corners)
        prompt_ids = self._prompt_ids(prompts, len(corners), problems)
        if len(corners) == len(problems):
            return self._refused(problems)
        scene = preprocess.preprocess_scene(points, self.scene_num_points)[None]
        return self._run_rows("pointcloud_region", scene, start, problems, prompt_ids, corners)

    def describe_point_objects(self, objects: list, prompts=None) -> list[Description]:
        """One description per single-object cloud. `prompts`: None, or one text prompt per object ("" for none)."""
        start = time.perf_counter()
        problems: dict[int, str] = {}
        prompt_ids = self._prompt_ids(prompts, len(objects), problems)
        if len(objects) == len(problems):
            return self._refused(problems)
        clouds = np.stack([preprocess.preprocess_object(points, self.object_num_points) for points in objects])
        return self._run_rows("pointcloud", clouds, start, problems, prompt_ids)

    def describe_images(self, images: list, prompts=None) -> list[Description]:
        """One description per whole image. `prompts`: None, or one text prompt per image ("" for none)."""
        start = time.perf_counter()
        problems: dict[int, str] = {}
        prompt_ids = self._prompt_ids(prompts, len(images), problems)
        if len(images) == len(problems):
            return self._refused(problems)
        pixels = np.stack([preprocess.preprocess_image(image, self.image_size) for image in images])
        return self._run_rows("image", pixels, start, problems, prompt_ids)

    # ---- shared path --------------------------------------------------------------------------------------------

    @staticmethod
    def _refused(problems: dict[int, str]) -> list[Description]:
        return [Description.refused(problems[row]) for row in range(len(problems))]

    def _prompt_ids(self, prompts, count: int, problems: dict[int, str]) -> list[tuple[int, ...]] | None:
        """Each row's prompt tokens, or None where no row has a prompt; a row whose prompt is too long gets a
        problem (a wrong `prompts` raises ValueError)."""
        prompts = check_prompts(prompts, count)
        if prompts is None:
            return None
        prompt_ids = []
        for row, prompt in enumerate(prompts):
            try:
                prompt_ids.append(self.encode_prompt(prompt))
            except ValueError as error:
                problems.setdefault(row, str(error))
                prompt_ids.append(())
        return prompt_ids

    def _run_rows(self, modality: str, frames: np.ndarray, start: float, problems: dict[int, str],
                  prompt_ids=None, boxes=None) -> list[Description]:
        """Describe the rows without a problem (the regions of one frame, or frames), and put each refused row back
        in its place."""
        count = len(boxes) if boxes is not None else len(frames)
        usable = [row for row in range(count) if row not in problems]
        frame_index = None
        if boxes is not None:
            boxes, frame_index = boxes[usable], np.zeros(len(usable), np.int64)
        elif problems:
            frames = frames[usable]
        prompt_ids = None if prompt_ids is None else [prompt_ids[row] for row in usable]
        described = iter(self._run(modality, frames, start, boxes, frame_index, prompt_ids))
        return [Description.refused(problems[row]) if row in problems else next(described) for row in range(count)]

    def _run(self, modality: str, frames: np.ndarray, start: float, boxes=None, frame_index=None, prompt_ids=None):
        if self._cancelled.is_set():
            raise Cancelled("this describer was cancelled (Describer.cancel()): build a new one to describe again")
        if modality not in self.modalities:
            raise ValueError(f"this bundle was exported without {modality!r} (it has {', '.join(self.modalities)}): "
                             f"re-export with --modalities including {modality}")
        preprocess_ms = 1e3 * (time.perf_counter() - start)
        prompted = {} if prompt_ids is None or not any(prompt_ids) else {"prompt_ids": prompt_ids}
        decoded, timings = self.engine.generate(modality, frames, self.settings, boxes, frame_index,
                                                cancelled=self._cancelled.is_set, **prompted)
        timings = {"preprocess": preprocess_ms, **timings, "total": 1e3 * (time.perf_counter() - start)}
        return [self._description(row, timings) for row in decoded]

    def _description(self, row: Decoded, timings: dict) -> Description:
        if not math.isfinite(row.score):
            return Description.refused(
                f"the model's scores for it are not finite (score {row.score}): its input is out of the range the "
                "model computes in, e.g. coordinates near float32's limit; check the sensor's units")
        text = self.tokenizer.decode(list(row.token_ids), skip_special_tokens=True).strip()
        return Description(text=text, score=row.score, token_ids=row.token_ids, timings_ms=dict(timings))
