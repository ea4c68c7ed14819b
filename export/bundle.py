"""Writing a bundle: the directory that is the only contract between export and runtime.

manifest.json  contract/manifest.py's Manifest: format version, model config, modalities, preprocessing,
               generation defaults, every graph's file and input/output names, shapes and dtypes,
               precision, the sha256 of every file, and the exporter's versions
.verified.json the record that the files, as written, were hashed (runtime/bundle.py)
tokenizer/     the checkpoint's tokenizer files
*.onnx         the graphs (export/graphs.py), each with its weights in *.onnx.data (export/external_data.py)
engines/       TensorRT plans (python -m export.trt), named by their cache key

A bundle is written into a temporary sibling directory and renamed into place at the end, so a
failed export never leaves a half-written bundle where a runtime would load it.
"""
import dataclasses
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from contract.manifest import MANIFEST_NAME, TOKENIZER_DIR, Manifest, file_hashes
from runtime.bundle import record_verification

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def copy_tokenizer(checkpoint: Path, bundle: Path) -> None:
    present = [name for name in TOKENIZER_FILES if (checkpoint / name).is_file()]
    if "tokenizer.json" not in present:
        raise ValueError(f"checkpoint {checkpoint} has no tokenizer.json: save the model with its tokenizer "
                         "(model.save_pretrained(dir, tokenizer=...))")
    (bundle / TOKENIZER_DIR).mkdir()
    for name in present:
        shutil.copy2(checkpoint / name, bundle / TOKENIZER_DIR / name)


def write_manifest(bundle: Path, manifest: Manifest) -> Manifest:
    """Add the hashes of every file now in `bundle`, write manifest.json, and record that the files as they are
    now were hashed (runtime/bundle.py), so the runtime's first load need not hash them again."""
    manifest = dataclasses.replace(manifest, files=file_hashes(bundle))
    (bundle / MANIFEST_NAME).write_text(manifest.to_json())
    record_verification(bundle, manifest)
    return manifest


@contextmanager
def staging_directory(target: Path):
    """Yield an empty directory beside `target`; on success it replaces `target`, on failure it is removed."""
    target = Path(target).resolve()
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=parent))
    except OSError as error:
        raise ValueError(f"cannot write the bundle under {parent}: {error.strerror}: choose a writable --out") \
            from error
    try:
        yield staging
        if target.exists():
            previous = parent / f".{target.name}.previous"
            shutil.rmtree(previous, ignore_errors=True)
            os.replace(target, previous)
            os.replace(staging, target)
            shutil.rmtree(previous, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
