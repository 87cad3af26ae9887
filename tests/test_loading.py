import pytest

from eecompile.errors import ContractError, ModelLoadError
from eecompile.model.loading import load_model

GOOD = """
from torch import nn
from eecompile import EarlyExitModel
def build():
    head = lambda c: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 2))
    return EarlyExitModel([nn.Conv2d(1, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1)], [head(3), head(3)],
                          input_shape=(1, 5, 5))
def raises():
    raise RuntimeError("weights file gone")
def not_a_model():
    return nn.Linear(2, 2)
def broken_contract():
    return EarlyExitModel([nn.Conv2d(1, 3, 3)], [nn.Identity()], input_shape=(1, 5, 5))
"""


@pytest.fixture
def model_file(tmp_path):
    p = tmp_path / "my_model.py"
    p.write_text(GOOD)
    return p


def test_factory_loads(model_file):
    m = load_model(f"{model_file}:build")
    assert m.n_stages == 2 and not m.training


@pytest.mark.parametrize("func,err,msg", [
    ("raises", ModelLoadError, "raised RuntimeError: weights file gone"),
    ("not_a_model", ModelLoadError, "not an EarlyExitModel"),
    ("missing", ModelLoadError, "has no function 'missing'"),
    ("broken_contract", ContractError, "expected logits"),
])
def test_factory_errors(model_file, func, err, msg):
    with pytest.raises(err, match=msg):
        load_model(f"{model_file}:{func}")


def test_missing_file_and_unknown_zoo(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(f"{tmp_path}/nope.py:build")
    with pytest.raises(ModelLoadError, match="not a zoo model"):
        load_model("resnet9000")


def test_import_error_in_user_file(tmp_path):
    p = tmp_path / "bad.py"
    p.write_text("import not_a_module_anywhere\n")
    with pytest.raises(ModelLoadError, match="importing .* failed: ModuleNotFoundError"):
        load_model(f"{p}:build")


def test_two_stage_training_freezes_backbone_and_trains_heads():
    import torch

    from eecompile.data import load_data
    from eecompile.model.train import exit_accuracies, train
    from eecompile.model.zoo import ZOO, Recipe

    model = ZOO["resnet-digits"].make()
    data = load_data("digits:train")
    seen = {}

    def snapshot(name):
        return {k: v.clone() for k, v in model.state_dict().items() if k.startswith(name)}

    orig = torch.optim.AdamW

    class Spy(orig):  # record the backbone right before the head phase starts
        def __init__(self, params, **kw):
            params = list(params)
            if len(params) == sum(1 for h in model.heads[:-1] for _ in h.parameters()):
                seen["backbone"] = snapshot("segments")
            super().__init__(params, **kw)

    torch.optim.AdamW = Spy
    try:
        train(model, data, Recipe(mode="two-stage", epochs=8, lr=5e-3, batch_size=64), quiet=True)
    finally:
        torch.optim.AdamW = orig
    after = snapshot("segments")
    assert all(torch.equal(seen["backbone"][k], after[k]) for k in after)  # BN stats and weights frozen
    acc = exit_accuracies(model, load_data("digits:val"))
    assert acc[-1] > 0.9 and min(acc) > 0.3  # the heads learned (chance is 0.1)


def test_bundle_records_the_factory_by_absolute_path_so_validate_works_anywhere(tmp_path):
    """export my_model.py:build (relative to the cwd), then validate from another directory."""
    import json
    import subprocess
    import sys

    import numpy as np

    model_file = tmp_path / "my_model.py"  # seeded: the factory builds the same weights every time
    model_file.write_text("import torch\n" + GOOD.replace("def build():\n", "def build():\n    torch.manual_seed(0)\n"))

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", x=rng.random((160, 1, 5, 5), dtype=np.float32))
    np.savez(tmp_path / "val.npz", x=rng.random((120, 1, 5, 5), dtype=np.float32), y=rng.integers(0, 2, 120))

    def cli(cwd, *args):
        return subprocess.run([sys.executable, "-m", "eecompile", *args], cwd=cwd, capture_output=True, text=True,
                              timeout=300)

    res = cli(tmp_path, "export", "my_model.py:build", "--target", "onnx", "-c", "calib.npz", "-o", "b")
    assert res.returncode == 0, res.stderr
    source = json.loads((tmp_path / "b" / "manifest.json").read_text())["model_source"]
    assert source == f"{model_file.resolve()}:build"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    res = cli(elsewhere, "validate", tmp_path / "b", "--data", tmp_path / "val.npz", "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["passed"], res.stderr
    model_file.rename(tmp_path / "moved.py")  # the source is gone: a clear error with the next step
    res = cli(elsewhere, "validate", tmp_path / "b", "--data", tmp_path / "val.npz")
    assert res.returncode == 1 and "does not exist" in res.stderr and "hint:" in res.stderr
