"""runtime/bundle.py: a full sha256 verification when a bundle is written and on demand, and a quick check on
ordinary loads that still catches a truncated, replaced or rewritten file."""
import json
import os
import shutil

import pytest

from contract.manifest import MANIFEST_NAME, VERIFIED_NAME
from runtime import bundle as bundle_module
from runtime.bundle import FULL, BundleError, load_bundle
from runtime.cli import main as cli_main


@pytest.fixture
def bundle(tiny_bundle, tmp_path):
    copy = shutil.copytree(tiny_bundle, tmp_path / "bundle")
    load_bundle(copy)  # a copy's files are new to its record: this load verifies in full and records it
    return copy


@pytest.fixture
def hashed(monkeypatch):
    """The files load_bundle hashes, in order."""
    calls = []
    real = bundle_module.sha256

    def counting(path):
        calls.append(path.name)
        return real(path)

    monkeypatch.setattr(bundle_module, "sha256", counting)
    return calls


def data_file(bundle):
    return next(p for p in sorted(bundle.iterdir()) if p.name.endswith(".onnx.data"))


def test_export_records_its_verification_so_the_first_load_hashes_nothing(tiny_bundle, hashed):
    assert (tiny_bundle / VERIFIED_NAME).is_file()
    load_bundle(tiny_bundle)
    assert hashed == []


def test_a_quick_load_of_an_unchanged_bundle_hashes_nothing(bundle, hashed):
    load_bundle(bundle)
    assert hashed == []


def test_a_full_verification_hashes_every_listed_file(bundle, hashed):
    manifest = load_bundle(bundle, verify=FULL).manifest
    assert sorted(hashed) == sorted(name.rsplit("/", 1)[-1] for name in manifest.files)


def test_a_truncated_data_file_is_caught_on_a_quick_load_even_with_its_old_mtime(bundle):
    weights = data_file(bundle)
    stat = weights.stat()
    with open(weights, "r+b") as file:
        file.truncate(stat.st_size // 2)
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as a careless copy tool might leave it
    with pytest.raises(BundleError, match=f"{weights.name} does not match its sha256"):
        load_bundle(bundle)


def test_a_file_replaced_by_one_of_the_same_size_and_mtime_is_caught(bundle):
    weights = data_file(bundle)
    stat = weights.stat()
    forged = bundle / "forged"
    forged.write_bytes(b"\0" * stat.st_size)
    os.utime(forged, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.replace(forged, weights)
    with pytest.raises(BundleError, match=f"{weights.name} does not match its sha256"):
        load_bundle(bundle)


def test_a_missing_record_means_one_full_verification_then_quick_loads(bundle, hashed):
    (bundle / VERIFIED_NAME).unlink()
    load_bundle(bundle)
    assert len(hashed) == len(json.loads((bundle / MANIFEST_NAME).read_text())["files"])
    hashed.clear()
    load_bundle(bundle)
    assert hashed == []


def test_a_bundle_where_no_record_can_be_written_still_loads_by_verifying_in_full(bundle, hashed, monkeypatch):
    def read_only(*args):
        raise PermissionError(13, "Read-only file system")

    (bundle / VERIFIED_NAME).unlink()
    monkeypatch.setattr(bundle_module.os, "replace", read_only)
    load_bundle(bundle)
    load_bundle(bundle)
    assert len(hashed) == 2 * len(json.loads((bundle / MANIFEST_NAME).read_text())["files"])
    assert not (bundle / VERIFIED_NAME).exists() and not (bundle / f"{VERIFIED_NAME}.tmp").exists()


def test_an_unknown_verify_mode_is_refused():
    with pytest.raises(ValueError, match="verify='sometimes': use one of quick, full"):
        load_bundle("bundles/default", verify="sometimes")


def test_the_cli_verifies_a_bundle_on_demand(bundle, capsys):
    assert cli_main(["--bundle", str(bundle), "--verify"]) == 0
    files = len(json.loads((bundle / MANIFEST_NAME).read_text())["files"])
    assert capsys.readouterr().out.strip() == f"bundle {bundle}: all {files} files match their sha256 in the manifest"


def test_the_cli_verify_names_a_damaged_file(bundle, capsys):
    weights = data_file(bundle)
    weights.write_bytes(weights.read_bytes()[:-4] + b"\xff\xff\xff\xff")
    assert cli_main(["--bundle", str(bundle), "--verify"]) == 2
    assert f"{weights.name} does not match its sha256" in capsys.readouterr().err
