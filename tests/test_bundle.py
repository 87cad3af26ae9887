"""Loading a bundle checks schema version, presence and checksums of every file."""

import json
import shutil

import pytest

from eecompile import Runtime, load_bundle
from eecompile.errors import BundleError, ChecksumError, SchemaVersionError


@pytest.fixture
def copy(int8_bundle, tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(int8_bundle.root, dst)
    return dst


def test_roundtrip(copy):
    b = load_bundle(copy)
    assert b.manifest.n_exits == 3 and b.path_of(b.manifest.stages[0].graphs[0]).exists()


def test_truncated_model_file(copy):
    f = copy / "stage1.tflite"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(ChecksumError, match=r"stage 1: stage1.tflite fails its sha256 check \(size 100"):
        load_bundle(copy)


def test_corrupt_model_file_same_size(copy):
    f = copy / "stage0.tflite"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="content differs"):
        load_bundle(copy)


def test_corrupt_file_that_passes_checksum_is_still_caught(copy):
    # Someone "fixes" the checksum of a garbage file: the runtime must still refuse it cleanly.
    f = copy / "stage2.tflite"
    f.write_bytes(b"\0" * 64)
    raw = json.loads((copy / "manifest.json").read_text())
    from eecompile.util import sha256_file

    raw["stages"][2]["graphs"][0]["sha256"] = sha256_file(f)
    raw["stages"][2]["graphs"][0]["size_bytes"] = 64
    (copy / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="stage2.tflite cannot be loaded"):
        Runtime(copy)


def test_packed_file_is_checked_too(copy):
    f = copy / "stages.tflite"
    f.write_bytes(f.read_bytes()[:-1])
    with pytest.raises(ChecksumError, match=r"packed stages: stages.tflite fails its sha256 check \(size"):
        load_bundle(copy)
    f.unlink()
    with pytest.raises(BundleError, match="stages.tflite is missing"):
        load_bundle(copy)


def test_schema_1_bundle_without_packed_file_loads(copy):
    raw = json.loads((copy / "manifest.json").read_text())
    raw["schema_version"], raw["packed"] = 1, None
    (copy / "manifest.json").write_text(json.dumps(raw))
    (copy / "stages.tflite").unlink()
    b = load_bundle(copy)
    assert b.manifest.packed is None and b.manifest.schema_version == 1


def test_missing_file(copy):
    (copy / "stage2.tflite").unlink()
    with pytest.raises(BundleError, match="stage 2: stage2.tflite is missing"):
        load_bundle(copy)


def test_schema_version(copy):
    raw = json.loads((copy / "manifest.json").read_text())
    raw["schema_version"] = 99
    (copy / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(SchemaVersionError, match="schema version 99, this eecompile reads 1, 2"):
        load_bundle(copy)


def test_malformed_manifest(copy):
    (copy / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(copy)
    (copy / "manifest.json").write_text(json.dumps({"schema_version": 1, "name": "x"}))
    with pytest.raises(BundleError, match="malformed"):
        load_bundle(copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(BundleError, match="no manifest.json"):
        load_bundle(copy)
    with pytest.raises(BundleError, match="not a bundle directory"):
        load_bundle(copy / "nope")
