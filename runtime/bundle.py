"""Reading a bundle (written by python -m export.onnx) and checking it is whole and untampered."""
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

FORMAT_VERSION = 1  # the bundle format export/bundle.py writes and this runtime reads
MANIFEST = "manifest.json"


class BundleError(ValueError):
    """A bundle that cannot be used as it is; the message says what to do."""


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: dict

    @property
    def modalities(self) -> list[str]:
        return self.manifest["modalities"]

    def graph_path(self, name: str) -> Path:
        if name not in self.manifest["graphs"]:
            raise BundleError(f"bundle {self.path} has no {name!r} graph (it has {sorted(self.manifest['graphs'])}): "
                              "re-export with the modality you need, python -m export.onnx --modalities ...")
        return self.path / self.manifest["graphs"][name]["file"]

    def graph_inputs(self, name: str) -> list[str]:
        return [spec["name"] for spec in self.manifest["graphs"][name]["inputs"]]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """The bundle at `path`, with its format and (when verify) every file's sha256 checked."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{path} is not a bundle (no {MANIFEST}): export one with "
                          "python -m export.onnx --ckpt CHECKPOINT --out BUNDLE")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as error:
        raise BundleError(f"{manifest_path} is not valid JSON ({error}): re-export the bundle") from error
    version = manifest.get("format")
    if version != FORMAT_VERSION:
        raise BundleError(f"bundle manifest says format {version}, this runtime reads format {FORMAT_VERSION}: "
                          "re-export with python -m export.onnx")
    bundle = Bundle(path, manifest)
    if verify:
        for relative, expected in manifest["files"].items():
            file = path / relative
            if not file.is_file():
                raise BundleError(f"bundle file {file} is missing: re-export the bundle")
            if sha256(file) != expected:
                raise BundleError(f"bundle file {file} does not match its sha256 in the manifest (changed or "
                                  "corrupt): re-export the bundle")
        unlisted = [g["file"] for g in manifest["graphs"].values() if g["file"] not in manifest["files"]]
        if unlisted:
            raise BundleError(f"bundle graphs {unlisted} have no sha256 in the manifest: re-export the bundle")
    return bundle
