"""The harness cross-compiled for aarch64 Linux and run under qemu-aarch64 (-cpu neoverse-n1)
with the aarch64 libLiteRt.so from the ai-edge-litert wheel: the same parity as on the
host (bit-exact int8 logits at every exit; class and exit index at several policies).
Correctness only: timings under emulation mean nothing."""

import pytest

from eecompile.harness import build_harness, generate_harness
from eecompile.harness.aarch64 import fetch_litert_aarch64, qemu_command

from conftest import require_tools
from test_harness import check_parity


@pytest.fixture(autouse=True)
def _tools():
    require_tools("aarch64-linux-gnu-gcc", "qemu-aarch64", "unshare", "cmake")


@pytest.fixture(scope="module")
def lib_aarch64():
    return str(fetch_litert_aarch64())


@pytest.mark.parametrize("which", ["dsnet", "resnet"])
def test_parity_under_qemu(which, int8_bundle, digits_data, lib_aarch64, tmp_path, request):
    bundle = int8_bundle if which == "dsnet" else request.getfixturevalue("resnet_bundle")
    exe = build_harness(generate_harness(bundle, tmp_path / "src"), tmp_path / "build", arch="aarch64").ee_run
    wrap = lambda e, argv: qemu_command(e, argv, tmp_path)  # noqa: E731
    check_parity(bundle, exe, digits_data["test"].x[:120], lib_aarch64, tmp_path, wrap=wrap)
