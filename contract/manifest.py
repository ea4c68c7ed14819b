"""The bundle manifest: the typed, versioned record that is the only contract between export and runtime.

export/ writes it (Manifest.to_json), runtime/ reads it (Manifest.from_json). Reading rejects a field that is
missing or unknown, or of the wrong type, naming it, so that a bundle from another version fails at load with
what to do, never later with a KeyError.
"""
import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from contract.generation import GenerationSettings

FORMAT_VERSION = 2  # 2: typed manifest, no image_mean/std (contract/preprocessing.py), checkpoint path relative
MANIFEST_NAME = "manifest.json"
TOKENIZER_DIR = "tokenizer"
VERIFIED_NAME = ".verified.json"  # the runtime's record of the bundle's last full verification (runtime/bundle.py)
GRAPH_DATA_SUFFIX = ".data"  # <graph>.onnx keeps its weights beside it in <graph>.onnx.data, when it has any
REEXPORT = "re-export the bundle with python -m export.onnx --ckpt CHECKPOINT --out BUNDLE"


# What JSON calls the type of a parsed value, for messages about a field of the wrong type.
_JSON_TYPES = {str: "string", float: "number", bool: "boolean", list: "array", dict: "object"}


class ManifestError(ValueError):
    """A manifest this runtime cannot read; the message says which field and what to do."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: list | tuple  # ints, or strings naming dynamic axes (a tuple where export builds it, a list once read)
    dtype: str  # numpy dtype name

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {axis: size for axis, size in enumerate(self.shape) if isinstance(size, str)}


@dataclass(frozen=True)
class GraphSpec:
    file: str  # relative to the bundle
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self.inputs]

    @property
    def data_file(self) -> str:
        """Where the graph's weights are, if it has a data file (Manifest.files lists it then)."""
        return self.file + GRAPH_DATA_SUFFIX


@dataclass(frozen=True)
class Preprocess:
    image_size: int
    object_num_points: int
    scene_num_points: int


@dataclass(frozen=True)
class LanguageModelLayout:
    """The llm graph's KV cache and LoRA adapters: stacked adapters are chosen per batch row by adapter_ids."""

    stacked: bool
    adapters: list[str]
    adapter_ids: dict[str, int]  # modality -> row index into the stacked adapters (len(adapters): none)
    num_layers: int
    num_heads: int
    head_dim: int

    @property
    def past_names(self) -> list[str]:
        return [f"past_{kind}_{layer}" for layer in range(self.num_layers) for kind in ("key", "value")]


@dataclass(frozen=True)
class Source:
    model_sha256: str  # of the checkpoint's model.safetensors
    checkpoint: str | None = None  # relative to the bundle, for the torch backend; None when not recorded


@dataclass(frozen=True)
class Manifest:
    format: int
    model: dict  # RegionBLIPConfig.to_dict() of the exported checkpoint
    modalities: list[str]
    preprocess: Preprocess
    generation: GenerationSettings
    llm: LanguageModelLayout
    graphs: dict[str, GraphSpec]
    precision: str
    exporter: dict  # package versions and the ONNX opset
    source: Source
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256, every file but the manifest

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2) + "\n"

    def graph_sha256(self, name: str) -> str:
        """One digest of a graph's own files (the .onnx and its data file): what a cache keyed on the graph
        must change with, since the .onnx alone does not change when only its weights do."""
        graph = self.graphs[name]
        digest = hashlib.sha256()
        for file in (graph.file, graph.data_file):
            if file in self.files:
                digest.update(f"{file}:{self.files[file]}\n".encode())
        return digest.hexdigest()

    @classmethod
    def from_json(cls, text: str) -> "Manifest":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ManifestError(f"the manifest is not valid JSON ({error}): {REEXPORT}") from error
        if not isinstance(data, dict):
            raise ManifestError(f"the manifest is a JSON {type(data).__name__}, not an object: {REEXPORT}")
        version = data.get("format")
        if isinstance(version, bool) or not isinstance(version, int):
            found = ("missing" if "format" not in data else "null" if version is None
                     else f"the {_JSON_TYPES.get(type(version), type(version).__name__)} {version!r}")
            raise ManifestError(f"manifest format is {found}: it must be the integer {FORMAT_VERSION}, the format "
                                f"this runtime reads: {REEXPORT}")
        if version != FORMAT_VERSION:
            raise ManifestError(f"bundle manifest says format {version}, this runtime reads format {FORMAT_VERSION}: "
                                f"{REEXPORT}")
        return _build(cls, data, "manifest")

    @classmethod
    def read(cls, bundle: str | Path) -> "Manifest":
        return cls.from_json((Path(bundle) / MANIFEST_NAME).read_text())


def _build(kind, value, where: str):
    """`value` (parsed JSON) as type `kind`, checking every field; ManifestError names the first bad one."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise ManifestError(f"{where} should be an object, found {type(value).__name__}: {REEXPORT}")
        fields = {f.name: f for f in dataclasses.fields(kind)}
        hints = typing.get_type_hints(kind)
        unknown = sorted(set(value) - set(fields))
        missing = sorted(name for name, f in fields.items() if name not in value
                         and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
        if unknown or missing:
            parts = [f"{kind} fields {names}" for kind, names in (("unknown", unknown), ("missing", missing)) if names]
            raise ManifestError(f"{where} has {' and '.join(parts)}: it was written by another version; {REEXPORT}")
        values = {name: _build(hints[name], item, f"{where}.{name}") for name, item in value.items()}
        try:
            return kind(**values)
        except ValueError as error:  # a dataclass's own check (GenerationSettings)
            raise ManifestError(f"{where}: {error}: {REEXPORT}") from error
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return _build(next(a for a in args if a is not type(None)), value, where)
    if origin is list or kind is list:
        if not isinstance(value, list):
            raise ManifestError(f"{where} should be a list, found {type(value).__name__}: {REEXPORT}")
        return [_build(args[0], item, f"{where}[{i}]") for i, item in enumerate(value)] if args else value
    if origin is dict or kind is dict:
        if not isinstance(value, dict):
            raise ManifestError(f"{where} should be an object, found {type(value).__name__}: {REEXPORT}")
        return {key: _build(args[1], item, f"{where}.{key}") for key, item in value.items()} if args else value
    expected = {int: int, str: str, bool: bool, float: (int, float)}[kind]
    if not isinstance(value, expected) or (kind is int and isinstance(value, bool)):
        raise ManifestError(f"{where} should be {kind.__name__}, found {value!r}: {REEXPORT}")
    return value


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_hashes(directory: Path) -> dict[str, str]:
    """sha256 of every file under `directory` except the manifest and the verification record, by relative
    POSIX path."""
    return {path.relative_to(directory).as_posix(): sha256(path)
            for path in sorted(Path(directory).rglob("*"))
            if path.is_file() and path.name not in (MANIFEST_NAME, VERIFIED_NAME)}
