"""The training recipe as read from YAML (config/train_*.yaml): model size, tokenizer, and the stages in order.

A stage is one run of the optimizer over one trainable set (`RegionBLIP.freeze_for`): "vision" pre-trains the ViT
(training/vision_pretraining.py), "blip2" trains the BLIP-2 image path on whole-image captioning, "regionblip" freezes
it and trains the RegionBLIP parts. Each stage interleaves
its tasks (a dataset + modality) step by step. Every field is checked here, so a typo fails before any training.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from contract.modalities import IMAGE, IMAGE_REGION, MODALITIES, POINTCLOUD, POINTCLOUD_REGION

from .config import RegionBLIPConfig
from .data.variations import VARIATIONS
from .vision_pretraining import MODALITY as PATCH_MODALITY

STAGE_KINDS = ("vision", "blip2", "regionblip")
# The real datasets a task can read (training/data/): the modality each holds and the files its reader needs.
REAL_SOURCES = {
    "refcoco": (IMAGE_REGION, ("instances_json", "refs_json", "image_dir")),  # RefCOCO / RefCOCO+ / RefCOCOg
    "region_json": (IMAGE_REGION, ("path", "image_root")),  # RegionBLIP's region json list
    "cap3d": (POINTCLOUD, ("captions_file", "points_dir")),  # Cap3D captions + Objaverse {uid}_8192.npz
    "scanrefer": (POINTCLOUD_REGION, ("scanrefer_json", "scannet_dir")),  # ScanRefer + ScanNet *_aligned_*.npy
}
DATA_SOURCES = ("synthetic", *REAL_SOURCES)
AMP_MODES = (None, "bf16")
# "text": language modelling on caption text alone (the LLM's pre-training, which OPT brings in BLIP-2);
# "image_patches": the ViT names the object centred on each patch (a vision stage's only task)
TASK_MODALITIES = (*MODALITIES, "text", PATCH_MODALITY)


class TrainConfigError(ValueError):
    """The training YAML is malformed; the message names the field and what is expected."""


@dataclass
class TaskConfig:
    modality: str  # one of the model's modalities, or "text"
    name: str | None = None  # in metrics and progress; defaults to the modality (name tasks that share one)
    data: str = "synthetic"  # or a real source of REAL_SOURCES
    weight: int = 1  # batches of this task per cycle of the stage's task schedule
    length: int = 100_000  # synthetic dataset size (samples are generated from (split, modality, index))
    image_size: int = 112  # synthetic images are drawn at this size, then resized to the model's
    max_objects: int = 5
    variation: str = "clean"  # synthetic: a name of data.variations.VARIATIONS ("varied": all of them mixed)
    paths: dict = field(default_factory=dict)  # a real source's files (relative ones from the working directory)
    split: str = "train"  # refcoco: the refs' split to read
    augment: bool = True  # cap3d, scanrefer: the release's point-cloud augmentation, drawn anew each epoch


@dataclass
class StageConfig:
    name: str
    kind: str  # "vision" | "blip2" | "regionblip": the trainable set
    tasks: list[TaskConfig]
    steps: int
    batch_size: int = 32  # per process and micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step (each from the next task of the schedule)
    lr: float = 1e-4
    min_lr: float = 1e-5
    warmup_lr: float = 1e-6
    warmup_steps: int = 200
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    clip_grad_norm: float | None = 1.0
    amp: str | None = None  # autocast dtype; on CPU bf16 was measured slower for these sizes, so off by default
    # blip2 only: BLIP-2 freezes a pretrained ViT; a random one must learn here unless a vision stage pretrained it
    train_vision: bool = False
    train_point_encoder: bool = False  # regionblip only: Point-BERT is frozen pretrained in the release
    # regionblip only: modalities whose query tokens and LLM projection (and, for point modalities, the point Q-Former)
    # start as copies of the trained image path; the others start fresh
    init_from_image: list[str] = field(default_factory=list)
    # blip2 / regionblip: the Q-Former's ITC and ITG losses beside the LM (and box) loss, as released; the model
    # needs its Q-Former text side (RegionBLIPConfig.qformer_text)
    itc: bool = False
    itg: bool = False
    max_text_tokens: int | None = None  # captions truncated to this many tokens, BOS included (the release: 32)
    checkpoint_every: int = 100
    keep_checkpoints: int = 2


@dataclass
class TrainConfig:
    model: RegionBLIPConfig
    stages: list[StageConfig]
    output_dir: Path
    seed: int = 0
    threads: int | None = 2
    tokenizer: str = "default"  # "default" (trained on the synthetic captions) or a directory with tokenizer.json
    export_dir: Path | None = None  # the last stage's final model is copied here
    # The first stage starts from this checkpoint (e.g. RegionBLIP.from_blip2(...).save_pretrained(dir, tokenizer))
    # instead of a random model; its config.json is the model config and, unless given, its tokenizer is used.
    init_checkpoint: Path | None = None
    # ITC / ITG: a directory with the Q-Former's tokenizer (the release: bert-base-uncased, [DEC] added as BOS);
    # None: the Q-Former reads the LLM tokenizer's ids
    qformer_tokenizer: str | None = None


TOP = "the training config"
# The range of each numeric field beyond its type: the word an error quotes, and the test a value must pass.
POSITIVE = ("positive", lambda value: value > 0)
NON_NEGATIVE = ("non-negative", lambda value: value >= 0)
RANGES = {
    TaskConfig: {name: POSITIVE for name in ("weight", "length", "image_size", "max_objects")},
    StageConfig: {**{name: POSITIVE for name in ("steps", "batch_size", "grad_accum", "lr", "clip_grad_norm",
                                                 "checkpoint_every", "keep_checkpoints", "max_text_tokens")},
                  **{name: NON_NEGATIVE for name in ("min_lr", "warmup_lr", "warmup_steps", "weight_decay")}},
    TrainConfig: {"seed": NON_NEGATIVE, "threads": POSITIVE},
}


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# How an error names each scalar field type, and the test a YAML value of that type passes.
SCALARS = {
    int: ("integer", lambda value: isinstance(value, int) and not isinstance(value, bool)),
    float: ("number", _is_number),
    bool: ("boolean (true or false)", lambda value: isinstance(value, bool)),
    str: ("string", lambda value: isinstance(value, str)),
}


def check_field(value, kind, name: str, bounds: tuple | None = None) -> None:
    """TrainConfigError unless `value`, as YAML gave it, is of the field's type `kind` (a SCALARS type, or one or
    None) and passes `bounds` (POSITIVE, NON_NEGATIVE); fields of other types are checked where they are read."""
    optional = type(None) in typing.get_args(kind)
    if optional:
        if value is None:
            return
        kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
    if kind not in SCALARS:
        return
    noun, is_kind = SCALARS[kind]
    adjective, in_range = bounds or ("", lambda value: True)
    if is_kind(value) and in_range(value):
        return
    words = f"{adjective} {noun}".strip()
    expected = ("an " if words[0] in "aeiou" else "a ") + words + (" or null" if optional else "")
    hint = (" (YAML reads it as a string: write the number unquoted, with a decimal point before any exponent, "
            "e.g. 1.0e-4, not 1e-4)" if kind is float and isinstance(value, str) and _reads_as_number(value) else "")
    raise TrainConfigError(f"{name} must be {expected}, got {value!r}{hint}")


def _reads_as_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _build(cls, values, where: str):
    if not isinstance(values, dict):
        raise TrainConfigError(f"{where} must be a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise TrainConfigError(f"{where} has unknown keys {unknown}: known keys are {sorted(fields)}")
    missing = [n for n, f in fields.items() if n not in values and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise TrainConfigError(f"{where} needs {missing}")
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        check_field(value, hints[name], name if where == TOP else f"{where}.{name}", RANGES[cls].get(name))
    return cls(**values)


def model_config(values: dict) -> RegionBLIPConfig:
    """`{preset: name, overrides: {...}}`: nested dicts (vision/qformer/text) are merged key by key."""
    if not isinstance(values or {}, dict):
        raise TrainConfigError(f"model must be a mapping {{preset: ..., overrides: {{...}}}}, got {values!r}")
    values = dict(values or {})
    preset = values.pop("preset", "tiny")
    overrides = values.pop("overrides", {}) or {}
    if values:
        raise TrainConfigError(f"model has unknown keys {sorted(values)}: use preset and overrides")
    if not isinstance(overrides, dict):
        raise TrainConfigError(f"model.overrides must be a mapping of RegionBLIPConfig fields, got {overrides!r}")
    merged = RegionBLIPConfig.preset(preset).to_dict()
    hints = typing.get_type_hints(RegionBLIPConfig)
    for key, value in overrides.items():
        if key not in merged:
            raise TrainConfigError(f"model.overrides.{key} is not a RegionBLIPConfig field: known {sorted(merged)}")
        if isinstance(merged[key], dict) and not isinstance(value, dict):
            raise TrainConfigError(f"model.overrides.{key} must be a mapping of {key} settings, got {value!r}")
        check_field(value, hints[key], f"model.overrides.{key}")
        merged[key] = {**merged[key], **value} if isinstance(merged[key], dict) else value
    try:
        return RegionBLIPConfig.from_dict(merged)
    except (TypeError, ValueError) as error:
        raise TrainConfigError(f"model: {error}") from error


def _real_source(task: TaskConfig, where: str, base_dir: Path) -> None:
    """Check a real source's modality and that its files exist."""
    if task.data not in REAL_SOURCES:
        if task.paths:
            raise TrainConfigError(f"{where}.paths: only a real data source ({list(REAL_SOURCES)}) reads files")
        return
    modality, keys = REAL_SOURCES[task.data]
    if task.modality != modality:
        raise TrainConfigError(f"{where}: {task.data} holds {modality} samples, not {task.modality!r}")
    if not isinstance(task.paths, dict) or sorted(task.paths) != sorted(keys):
        got = sorted(task.paths) if isinstance(task.paths, dict) else task.paths
        raise TrainConfigError(f"{where}.paths: {task.data} needs exactly {list(keys)}, got {got}")
    task.paths = {key: base_dir / str(task.paths[key]) for key in keys}
    for key, path in task.paths.items():
        if not path.exists():
            raise TrainConfigError(f"{where}.paths.{key}: {path} does not exist (relative paths start from the "
                                   "working directory)")


def _stage(values: dict, index: int, base_dir: Path) -> StageConfig:
    where = f"stages[{index}]"
    if not isinstance(values, dict):
        raise TrainConfigError(f"{where} must be a mapping (name, kind, steps, tasks, ...), got {values!r}")
    values = dict(values)
    tasks = values.pop("tasks", None)
    if not tasks or not isinstance(tasks, list):
        raise TrainConfigError(f"{where} needs a non-empty tasks list (each {{modality: ..., data: synthetic}})")
    values["tasks"] = [_build(TaskConfig, t, f"{where}.tasks[{i}]") for i, t in enumerate(tasks)]
    if "betas" in values:
        betas = values["betas"]
        if not (isinstance(betas, list) and len(betas) == 2 and all(_is_number(b) and 0 <= b < 1 for b in betas)):
            raise TrainConfigError(f"{where}.betas must be two numbers in [0, 1), e.g. [0.9, 0.999], got {betas!r}")
        values["betas"] = tuple(betas)
    stage = _build(StageConfig, values, where)
    if stage.min_lr > stage.lr:
        raise TrainConfigError(f"{where}.min_lr {stage.min_lr} is above lr {stage.lr}: the learning rate decays "
                               "from lr down to min_lr, give min_lr <= lr")
    if stage.kind not in STAGE_KINDS:
        raise TrainConfigError(f"{where}.kind is {stage.kind!r}: expected one of {list(STAGE_KINDS)}")
    if stage.amp not in AMP_MODES:
        raise TrainConfigError(f"{where}.amp is {stage.amp!r}: expected null or bf16 (fp16 would need a loss scaler)")
    if stage.kind == "regionblip" and stage.train_vision:
        raise TrainConfigError(f"{where}: train_vision in a regionblip stage would change the frozen image path")
    if stage.kind != "regionblip" and (stage.train_point_encoder or stage.init_from_image):
        raise TrainConfigError(f"{where}: train_point_encoder and init_from_image belong to a regionblip stage")
    if stage.kind == "vision" and (stage.itc or stage.itg):
        raise TrainConfigError(f"{where}: itc and itg are Q-Former losses, for a blip2 or regionblip stage")
    if stage.kind == "vision" and stage.train_vision:
        raise TrainConfigError(f"{where}: a vision stage trains the ViT alone; train_vision belongs to a blip2 stage")
    if not isinstance(stage.init_from_image, list) or not set(stage.init_from_image) <= set(MODALITIES[1:]):
        raise TrainConfigError(f"{where}.init_from_image must list modalities from {list(MODALITIES[1:])}, got "
                               f"{stage.init_from_image!r}")
    for i, task in enumerate(stage.tasks):
        task.name = task.name or task.modality
        if task.modality not in TASK_MODALITIES:
            raise TrainConfigError(f"{where}.tasks[{i}].modality is {task.modality!r}: expected one of "
                                   f"{list(TASK_MODALITIES)}")
        if task.variation not in VARIATIONS or (task.variation != "clean" and task.data != "synthetic"):
            raise TrainConfigError(f"{where}.tasks[{i}].variation is {task.variation!r}: synthetic data takes one of "
                                   f"{list(VARIATIONS)}; real data is as it is (leave variation out)")
        if task.data not in DATA_SOURCES:
            raise TrainConfigError(f"{where}.tasks[{i}].data is {task.data!r}: this trainer reads "
                                   f"{list(DATA_SOURCES)} data")
        _real_source(task, f"{where}.tasks[{i}]", base_dir)
        if (stage.kind == "vision") != (task.modality == PATCH_MODALITY):
            raise TrainConfigError(f"{where}.tasks[{i}]: {PATCH_MODALITY!r} is the task of a vision stage, and its "
                                   f"only one; got {task.modality!r} in a {stage.kind} stage")
        if stage.kind == "blip2" and task.modality not in (IMAGE, "text"):
            raise TrainConfigError(f"{where}: a blip2 stage trains the image modality (and text), not "
                                   f"{task.modality!r}")
        if stage.kind == "regionblip" and task.modality in (IMAGE, "text"):
            raise TrainConfigError(f"{where}: the image path and the LLM are frozen in a regionblip stage; train "
                                   f"{task.modality!r} in blip2")
    names = [t.name for t in stage.tasks]
    if len(set(names)) != len(names):
        raise TrainConfigError(f"{where}: task names {names} repeat; give tasks of one modality distinct names")
    return stage


def parse_train_config(values: dict, base_dir: Path = Path(".")) -> TrainConfig:
    if not isinstance(values or {}, dict):
        raise TrainConfigError(f"{TOP} must be a mapping (output_dir, stages, ...), got {type(values).__name__}")
    values = dict(values or {})
    if not values.get("stages") or not isinstance(values["stages"], list):
        raise TrainConfigError(f"{TOP} needs a non-empty 'stages' list")
    if "output_dir" not in values:
        raise TrainConfigError(f"{TOP} needs output_dir (where checkpoints and metrics go)")
    for name in ("output_dir", "export_dir", "init_checkpoint"):
        if values.get(name) is not None and not isinstance(values[name], (str, Path)):
            raise TrainConfigError(f"{name} must be a path (a string), got {values[name]!r}")
    if values.get("init_checkpoint") is not None:
        init = base_dir / values["init_checkpoint"]
        if "model" in values:
            raise TrainConfigError("give either model (a preset to start from) or init_checkpoint, not both: "
                                   "a checkpoint brings its own model config")
        if not (init / "config.json").is_file():
            raise TrainConfigError(f"init_checkpoint {init} has no config.json: pass a directory written by "
                                   "save_pretrained")
        values["init_checkpoint"] = init
        values["model"] = RegionBLIPConfig.load(init / "config.json")
        if values.get("tokenizer", "default") == "default":
            values["tokenizer"] = str(init)
    else:
        values["model"] = model_config(values.get("model"))
    values["stages"] = [_stage(s, i, base_dir) for i, s in enumerate(values["stages"])]
    names = [s.name for s in values["stages"]]
    if len(set(names)) != len(names):
        raise TrainConfigError(f"stage names must be unique, got {names}")
    values["output_dir"] = base_dir / values["output_dir"]
    if values.get("export_dir") is not None:
        values["export_dir"] = base_dir / values["export_dir"]
    return _build(TrainConfig, values, TOP)


def load_train_config(path: str | Path) -> TrainConfig:
    path = Path(path)
    if path.is_dir():
        raise TrainConfigError(f"training config {path} is a directory: pass the YAML file, e.g. --config "
                               "config/train_default.yaml")
    if not path.is_file():
        raise TrainConfigError(f"training config {path} not found: pass --config config/train_default.yaml")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise TrainConfigError(f"{path} is not valid YAML: {error}") from error
    return parse_train_config(values)
