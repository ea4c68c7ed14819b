"""Reading a bundle (written by python -m export.onnx) and checking it is whole and untampered.

A full verification hashes every file (sha256) against the manifest: about a minute for the 15 GB of a
release-size bundle. It runs when the bundle is written (export records it) and whenever asked (verify="full",
python -m runtime.cli --verify). An ordinary load (verify="quick") compares each file's size, inode and
modification/change times with the record of the last full verification (.verified.json), which catches a
truncated, replaced or rewritten file without reading it (a file's change time cannot be set back); only a
bundle without a matching record is hashed in full, and the record is then written for next time.
"""
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from contract.boxes import corner_convention_problem
from contract.manifest import (
    MANIFEST_NAME, REEXPORT, TOKENIZER_DIR, VERIFIED_NAME, GraphSpec, Manifest, ManifestError, sha256,
)
from contract.modalities import POINTCLOUD_REGION

QUICK, FULL = "quick", "full"
VERIFY_MODES = (QUICK, FULL)
RECORD_FORMAT = 1


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

    @property
    def takes_prompts(self) -> bool:
        """Whether the llm graph takes text prompts (its padding input, export/llm.py); bundles exported before
        text prompts have none."""
        return "padding" in self.graph_inputs("llm")

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
    _check_listed(path, manifest)
    for relative, expected in manifest.files.items():
        if sha256(path / relative) != expected:
            raise BundleError(f"bundle file {path / relative} does not match its sha256 in the manifest (changed or "
                              f"corrupt): {REEXPORT}")


def _check_listed(path: Path, manifest: Manifest) -> None:
    for relative in manifest.files:
        if not (path / relative).is_file():
            raise BundleError(f"bundle file {path / relative} is missing: {REEXPORT}")
    unlisted = [g.file for g in manifest.graphs.values() if g.file not in manifest.files]
    if unlisted:
        raise BundleError(f"bundle graphs {unlisted} have no sha256 in the manifest: {REEXPORT}")


def _file_states(path: Path, manifest: Manifest) -> dict[str, list[int]]:
    states = {}
    for relative in manifest.files:
        stat = os.stat(path / relative)
        states[relative] = [stat.st_size, stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns]
    return states


def _manifest_sha256(path: Path) -> str:
    return hashlib.sha256((path / MANIFEST_NAME).read_bytes()).hexdigest()


def record_verification(path: Path, manifest: Manifest) -> bool:
    """Write the record that the bundle's files, as they are now, passed a full verification; False where the
    bundle's directory is read-only (every load then verifies in full)."""
    record = {"format": RECORD_FORMAT, "manifest_sha256": _manifest_sha256(path),
              "files": _file_states(path, manifest)}
    temporary = path / f"{VERIFIED_NAME}.tmp"
    try:
        temporary.write_text(json.dumps(record))
        os.replace(temporary, path / VERIFIED_NAME)
    except OSError:
        temporary.unlink(missing_ok=True)
        return False
    return True


def _matches_record(path: Path, manifest: Manifest) -> bool:
    try:
        record = json.loads((path / VERIFIED_NAME).read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(record, dict) and record.get("format") == RECORD_FORMAT
            and record.get("manifest_sha256") == _manifest_sha256(path)
            and record.get("files") == _file_states(path, manifest))


def load_bundle(path: str | Path, verify: str = QUICK) -> Bundle:
    """The bundle at `path`, with its manifest read strictly and its files verified: verify="full" hashes every
    file; "quick" (the default) trusts the record of the last full verification while no file has changed since
    (see the module docstring), and verifies in full otherwise."""
    if verify not in VERIFY_MODES:
        raise ValueError(f"verify={verify!r}: use one of {', '.join(VERIFY_MODES)}")
    path = Path(path)
    manifest_path = path / MANIFEST_NAME
    if not manifest_path.is_file():
        raise BundleError(f"{path} is not a bundle (no {MANIFEST_NAME}): export one with "
                          "python -m export.onnx --ckpt CHECKPOINT --out BUNDLE")
    try:
        manifest = Manifest.from_json(manifest_path.read_text())
    except ManifestError as error:
        raise BundleError(f"{manifest_path}: {error}") from error
    if POINTCLOUD_REGION in manifest.modalities:
        problem = corner_convention_problem(manifest.model.get("box_corner_convention"), f"the bundle {path}")
        if problem:
            raise BundleError(problem)
    _check_listed(path, manifest)
    if verify == FULL or not _matches_record(path, manifest):
        verify_files(path, manifest)
        record_verification(path, manifest)
    return Bundle(path, manifest)
