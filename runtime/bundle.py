"""Reading a bundle (written by python -m export.onnx) and checking it is whole and untampered."""
from dataclasses import dataclass
from pathlib import Path

from contract.manifest import MANIFEST_NAME, REEXPORT, TOKENIZER_DIR, GraphSpec, Manifest, ManifestError, sha256


class BundleError(ValueError):
    """A bundle that cannot be used as it is; the message says what to do."""


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: Manifest

    @property
    def modalities(self) -> list[str]:
        return self.manifest.modalities

    @property
    def tokenizer_file(self) -> Path:
        return self.path / TOKENIZER_DIR / "tokenizer.json"

    def graph(self, name: str) -> GraphSpec:
        if name not in self.manifest.graphs:
            raise BundleError(f"bundle {self.path} has no {name!r} graph (it has {sorted(self.manifest.graphs)}): "
                              "re-export with the modality you need, python -m export.onnx --modalities ...")
        return self.manifest.graphs[name]

    def graph_path(self, name: str) -> Path:
        return self.path / self.graph(name).file

    def graph_inputs(self, name: str) -> list[str]:
        return self.graph(name).input_names

    def checkpoint(self) -> Path:
        """The checkpoint the bundle was exported from, for the torch backend; BundleError when it is not there."""
        recorded = self.manifest.source.checkpoint
        if recorded is None:
            raise BundleError(f"bundle {self.path} records no checkpoint: the torch backend needs one, "
                              "use Describer.from_checkpoint(CHECKPOINT)")
        directory = (self.path / recorded).resolve()
        if not directory.is_dir():
            raise BundleError(f"bundle {self.path} was exported from {recorded} (relative to the bundle), which is "
                              "not here: the torch backend needs the checkpoint, use Describer.from_checkpoint(DIR), "
                              "or the onnxruntime or tensorrt backend, which need only the bundle")
        return directory


def verify_files(path: Path, manifest: Manifest) -> None:
    """Every listed file is present with its sha256, and every graph's file is listed; BundleError otherwise."""
    for relative, expected in manifest.files.items():
        file = path / relative
        if not file.is_file():
            raise BundleError(f"bundle file {file} is missing: {REEXPORT}")
        if sha256(file) != expected:
            raise BundleError(f"bundle file {file} does not match its sha256 in the manifest (changed or corrupt): "
                              f"{REEXPORT}")
    unlisted = [g.file for g in manifest.graphs.values() if g.file not in manifest.files]
    if unlisted:
        raise BundleError(f"bundle graphs {unlisted} have no sha256 in the manifest: {REEXPORT}")


def load_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """The bundle at `path`, with its manifest read strictly and (when verify) every file's sha256 checked."""
    path = Path(path)
    manifest_path = path / MANIFEST_NAME
    if not manifest_path.is_file():
        raise BundleError(f"{path} is not a bundle (no {MANIFEST_NAME}): export one with "
                          "python -m export.onnx --ckpt CHECKPOINT --out BUNDLE")
    try:
        manifest = Manifest.from_json(manifest_path.read_text())
    except ManifestError as error:
        raise BundleError(f"{manifest_path}: {error}") from error
    if verify:
        verify_files(path, manifest)
    return Bundle(path, manifest)
