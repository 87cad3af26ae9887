"""The CLI is a thin shim: every command has help with an example; errors are messages."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from eecompile.cli import main

COMMANDS = sorted(main.commands)


@pytest.fixture
def cli():
    runner = CliRunner()
    return lambda *args: runner.invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_example(cli, command):
    res = cli(command, "--help")
    assert res.exit_code == 0 and "Example:" in res.output


def test_export_run_info_validate(cli, tmp_path, digits_data):
    out = tmp_path / "b"
    res = cli("export", "dsnet-digits", "--target", "onnx", "--calib-data", "digits:train:64", "-o", out, "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["validation"]["passed"] and report["validation"]["n_samples"] == 300  # digits:val

    np.save(tmp_path / "x.npy", digits_data["test"].x[:5])
    res = cli("run", out, "--input", tmp_path / "x.npy", "--policy", "max-prob", "--threshold", "0.5", "--json")
    assert res.exit_code == 0
    rows = json.loads(res.output)["samples"]
    assert len(rows) == 5 and all(0 <= r["exit_idx"] <= 2 for r in rows)

    res = cli("run", out, "--input", "digits:test:20", "--max-exit", "0", "--json")
    summary = json.loads(res.output)["summary"]
    assert summary["exit_share"] == [1.0, 0.0, 0.0] and summary["accuracy"] > 0.7

    info = cli("info", out).output
    assert "stage 2" in info and "packed" not in info  # ONNX bundles have no packed file
    res = cli("validate", out, "--data", "digits:test:100", "--json")
    assert res.exit_code == 0 and json.loads(res.output)["n_samples"] == 100


def test_errors_are_messages_not_tracebacks(cli, tmp_path):
    res = cli("export", "no-such-model", "--calib-data", "digits", "-o", tmp_path / "b")
    assert res.exit_code == 1 and "ModelLoadError: no-such-model is not a zoo model" in res.output.replace("'", "")
    assert "Traceback" not in res.output
    res = cli("run", tmp_path / "missing", "--input", "digits:test:2")
    assert res.exit_code == 1 and "BundleError" in res.output and "hint:" in res.output
    res = cli("export", "dsnet-digits", "--calib-data", "digits:nope", "-o", tmp_path / "b")
    assert res.exit_code == 1 and "unknown split" in res.output


def test_existing_output_fails_before_any_work(cli, tmp_path):
    (tmp_path / "b").mkdir()
    res = cli("export", "dsnet-digits", "--calib-data", "digits", "-o", tmp_path / "b")
    assert res.exit_code == 1 and "already exists" in res.output and "--force" in res.output


def test_zoo_lists_models(cli):
    rows = json.loads(cli("zoo", "--json").output)
    assert {"dsnet-fmnist", "dsnet-digits", "resnet-digits"} <= {r["name"] for r in rows}


def test_harness_command_generates_and_builds(cli, int8_bundle, tmp_path):
    import shutil

    if shutil.which("cmake") is None:
        pytest.skip("needs cmake")
    res = cli("harness", int8_bundle.root, "-o", tmp_path / "c", "--build")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "c" / "build-host" / "ee_run").exists()
    assert "EE_BUNDLE_N_STAGES 3" in (tmp_path / "c" / "ee_bundle_gen.h").read_text()
    assert '"stages.tflite"' in (tmp_path / "c" / "ee_bundle_gen.c").read_text()
    res = cli("harness", int8_bundle.root, "-o", tmp_path / "c-files", "--per-stage-files")
    assert res.exit_code == 0 and '"stages.tflite"' not in (tmp_path / "c-files" / "ee_bundle_gen.c").read_text()
    info = cli("info", int8_bundle.root).output
    assert "packed: stages.tflite" in info and "signatures stage0, stage1, stage2" in info
    res = cli("harness", tmp_path / "nope", "-o", tmp_path / "c2")
    assert res.exit_code == 1 and "BundleError" in res.output


NOISE = ("oneDNN", "fully_quantize", "XNNPACK", "absl::InitializeLog", "cudart")


def test_converter_log_noise_stays_off_the_terminal_unless_verbose(tmp_path, int8_bundle):
    """Native log lines (TensorFlow, the MLIR quantizer, LiteRT) go to a log file; --verbose shows them."""
    import subprocess
    import sys

    def cli_proc(*args):
        return subprocess.run([sys.executable, "-m", "eecompile", *map(str, args)], capture_output=True, text=True,
                              timeout=600)

    quiet = cli_proc("export", "dsnet-digits", "-c", "digits:train:256", "-o", tmp_path / "b")
    assert quiet.returncode == 0, quiet.stderr
    assert not [n for n in NOISE if n in quiet.stderr + quiet.stdout], quiet.stderr
    assert "bundle:" in quiet.stdout
    run = cli_proc("run", int8_bundle.root, "-i", "digits:test:4")
    assert run.returncode == 0 and "XNNPACK" not in run.stderr + run.stdout
    loud = cli_proc("--verbose", "run", int8_bundle.root, "-i", "digits:test:4")
    assert loud.returncode == 0 and "XNNPACK" in loud.stderr
