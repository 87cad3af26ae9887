import numpy as np
import pytest

from eecompile.data import load_data, parse_data_spec
from eecompile.core.inputs import InputSpec, check_inputs
from eecompile.data.datasets import FASHION_MNIST_DIR
from eecompile.errors import DataError


def test_digits_splits_are_disjoint_and_scaled():
    tr, va, te = (load_data(f"digits:{s}") for s in ("train", "val", "test"))
    assert (len(tr), len(va), len(te)) == (1197, 300, 300)
    assert tr.x.dtype == np.float32 and tr.x.shape[1:] == (1, 8, 8)
    assert 0.0 <= tr.x.min() and tr.x.max() <= 1.0
    rows = {r.tobytes() for r in te.x}
    assert not any(r.tobytes() in rows for r in va.x[:100] if r.any())  # no test image in val (dup-free sample)


@pytest.mark.skipif(not FASHION_MNIST_DIR.exists(), reason="needs Debian package dataset-fashion-mnist")
def test_fashion_mnist_idx_reader():
    te = load_data("fashion-mnist:test:100")
    assert te.x.shape == (100, 1, 28, 28) and te.y.shape == (100,) and te.class_names[0] == "t-shirt"
    assert len(load_data("fashion-mnist:val")) == 5000


def test_fashion_mnist_missing_dir_is_clear(tmp_path):
    from eecompile.data.datasets import load_fashion_mnist

    with pytest.raises(DataError, match="apt-get install -y dataset-fashion-mnist"):
        load_fashion_mnist("test", data_dir=tmp_path)


@pytest.mark.parametrize("spec,msg", [("nope", "unknown dataset"), ("digits:dev", "unknown split"),
                                      ("digits:val:x", "not an integer"), ("digits:val:0", "positive"),
                                      ("digits:val:1:2", "cannot parse")])
def test_bad_specs(spec, msg):
    with pytest.raises(DataError, match=msg):
        parse_data_spec(spec)


def test_npy_and_npz(tmp_path):
    x = np.random.rand(5, 1, 8, 8).astype(np.float32)
    np.save(tmp_path / "a.npy", x)
    np.savez(tmp_path / "b.npz", x=x, y=np.arange(5))
    assert load_data(str(tmp_path / "a.npy")).y is None
    assert list(load_data(str(tmp_path / "b.npz")).y) == [0, 1, 2, 3, 4]
    np.savez(tmp_path / "c.npz", inputs=x)
    with pytest.raises(DataError, match="no 'x'"):
        load_data(str(tmp_path / "c.npz"))
    (tmp_path / "d.npy").write_bytes(b"garbage")
    with pytest.raises(DataError, match="is not a .npy file"):
        load_data(str(tmp_path / "d.npy"))
    with pytest.raises(DataError, match="does not exist"):
        load_data(str(tmp_path / "missing.npy"))


def test_check_inputs():
    spec = [InputSpec((1, 8, 8))]
    good = np.zeros((4, 1, 8, 8), np.float32)
    assert check_inputs(good, spec, "x")[0].shape == (4, 1, 8, 8)
    assert check_inputs(good[0], spec, "x")[0].shape == (1, 1, 8, 8)  # one sample without the batch axis
    with pytest.raises(DataError, match="transpose NHWC"):
        check_inputs(np.zeros((4, 8, 8, 1), np.float32), spec, "x")
    with pytest.raises(DataError, match="dtype uint8"):
        check_inputs(good.astype(np.uint8), spec, "x")
    bad = good.copy()
    bad[2, 0, 0, 0] = np.nan
    with pytest.raises(DataError, match="1 sample"):
        check_inputs(bad, spec, "x")
    with pytest.raises(DataError, match="at least 32"):
        check_inputs(good, spec, "x", min_samples=32)
