"""The Python runtime: early exits equal the policy applied to all-exit logits, every policy,
max_exit, batches that shrink, input checks, quantization arithmetic."""

import numpy as np
import pytest

from eecompile import POLICIES, Runtime, make_policy
from eecompile.bundle.manifest import QuantParams
from eecompile.errors import EecompileError, InputError
from eecompile.core.policies import simulate, softmax
from eecompile.core.quant import needs_requant, quantize, requantize, round_half_away


@pytest.fixture(scope="module")
def int8_rt(int8_bundle):
    return Runtime(int8_bundle)


@pytest.fixture(scope="module")
def all_exits(int8_rt, digits_data):
    return int8_rt.run(digits_data["test"].x, no_early_exit=True, keep_logits=True)


@pytest.mark.parametrize("policy,threshold", [("max-prob", 0.9), ("max-prob", 0.99), ("entropy", 0.1),
                                              ("margin", 0.7), ("patience", 1)])
def test_early_exit_equals_policy_on_all_exit_logits(int8_rt, all_exits, digits_data, policy, threshold):
    x = digits_data["test"].x
    res = int8_rt.run(x, policy=policy, thresholds=threshold)
    exit_idx, pred, _ = simulate(make_policy(policy, threshold, 3), all_exits.exit_logits)
    np.testing.assert_array_equal(res.exit_idx, exit_idx)
    np.testing.assert_array_equal(res.class_idx, pred)
    # stages a sample never reached cost nothing; the ones it ran were timed
    for i in range(len(x)):
        e = res.exit_idx[i]
        assert (res.stage_time_us[i, : e + 1] > 0).all() and (res.stage_time_us[i, e + 1 :] == 0).all()


def test_every_policy_is_registered_and_exits_early_somewhere(int8_rt, digits_data):
    assert set(POLICIES) == {"max-prob", "entropy", "margin", "patience", "learned"}
    loose = {"max-prob": 0.5, "entropy": 0.5, "margin": 0.3, "patience": 1}
    for name, t in loose.items():
        res = int8_rt.run(digits_data["test"].x, policy=name, thresholds=t)
        assert (res.exit_idx < 2).mean() > 0.5, name
    # the learned gate needs its per-exit weights (eecompile calibrate fits them)
    with pytest.raises(EecompileError, match="needs one gate"):
        int8_rt.run(digits_data["test"].x, policy="learned", thresholds=0.5)
    gates = [[8.0, 0.0, 0.0, 0.0, -4.0]] * 2 + [None]  # sigmoid(8 p1 - 4) >= 0.5 <=> p1 >= 0.5
    a = int8_rt.run(digits_data["test"].x, policy=make_policy("learned", 0.5, 3, gates=gates))
    b = int8_rt.run(digits_data["test"].x, policy="max-prob", thresholds=0.5)
    np.testing.assert_array_equal(a.exit_idx, b.exit_idx)


def test_dropped_exit_runs_the_trunk_and_never_fires(int8_rt, all_exits, digits_data):
    x = digits_data["test"].x
    res = int8_rt.run(x, policy="max-prob", thresholds=0.0, kept=[False, True, True])
    assert (res.exit_idx == 1).all()  # exit 0 would take everyone at t = 0; it is dropped
    np.testing.assert_array_equal(res.class_idx, all_exits.exit_logits[1].argmax(1))
    assert int8_rt.manifest.stages[0].trunk is not None
    # the trunk (segment without its head) is cheaper than the fused stage
    fused = int8_rt.run(x, policy="max-prob", thresholds=0.0, kept=[True, True, True])
    assert np.median(res.stage_time_us[:, 0]) < np.median(fused.stage_time_us[:, 0])


def test_max_exit_caps(int8_rt, digits_data):
    # patience 2 cannot fire before exit 2 (PABEE needs two agreeing exits after the first),
    # so every sample runs to the cap. (max-prob at t=1.0 is no such guarantee: a softmax of
    # confident int8 logits rounds to exactly 1.0.)
    res = int8_rt.run(digits_data["test"].x, policy="patience", thresholds=2, max_exit=1)
    assert (res.exit_idx == 1).all()
    with pytest.raises(EecompileError, match="max_exit 3 out of range"):
        int8_rt.run(digits_data["test"].x, max_exit=3)


def test_per_exit_thresholds(int8_rt, all_exits, digits_data):
    # normalised entropy is > 0 always and <= 1 always: exit 0 never fires, exit 1 always does
    res = int8_rt.run(digits_data["test"].x, policy="entropy", thresholds=[0.0, 1.0])
    assert (res.exit_idx == 1).all()
    assert 0.95 <= np.mean(res.class_idx == all_exits.exit_logits[1].argmax(1))


def test_patience_follows_pabee():
    pol = make_policy("patience", 1, 3)
    a = np.array([[5.0, 0, 0], [0, 5.0, 0]])
    b = np.array([[5.0, 0, 0], [5.0, 0, 0]])
    exit_idx, pred, _ = simulate(pol, [a, b, b])
    assert list(exit_idx) == [1, 2] and list(pred) == [0, 0]


def test_onnx_batched_run_matches_litert_classes(onnx_bundle, int8_bundle, digits_data):
    x = digits_data["test"].x
    onnx_res = Runtime(onnx_bundle).run(x, no_early_exit=True)
    assert not Runtime(onnx_bundle).executor.runners[0][0].fixed_batch
    assert np.mean(onnx_res.class_idx == Runtime(int8_bundle).run(x, no_early_exit=True).class_idx) >= 0.98


def test_input_checks(int8_rt):
    with pytest.raises(InputError, match="does not match"):
        int8_rt.run(np.zeros((2, 8, 8, 1), np.float32))
    with pytest.raises(InputError, match="dtype uint8"):
        int8_rt.run(np.zeros((2, 1, 8, 8), np.uint8))
    x = np.zeros((2, 1, 8, 8), np.float32)
    x[1, 0, 3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        int8_rt.run(x)
    assert int8_rt.run(np.zeros((1, 8, 8), np.float32)).class_idx.shape == (1,)  # one unbatched sample


def test_threshold_and_policy_checks():
    with pytest.raises(EecompileError, match="out of range"):
        make_policy("max-prob", 1.5, 3)
    with pytest.raises(EecompileError, match="whole numbers"):
        make_policy("patience", 1.5, 3)
    with pytest.raises(EecompileError, match="unknown exit policy"):
        make_policy("vibes", 0.5, 3)
    with pytest.raises(EecompileError, match="4 thresholds for 3 exits"):
        make_policy("max-prob", [0.5] * 4, 3)


def test_quant_arithmetic():
    assert list(round_half_away(np.array([-2.5, -0.5, 0.5, 1.5, 2.5]))) == [-3, -1, 1, 2, 3]
    q = QuantParams(0.1, -3)
    assert list(quantize(np.array([0.0, 0.25, -100.0, 100.0]), q, "int8")) == [-3, 0, -128, 127]
    codes = np.arange(-128, 128, dtype=np.int8)
    np.testing.assert_array_equal(requantize(codes, q, q, "int8"), codes)
    q2 = QuantParams(0.2, -3)
    # (1+3)*0.5 = 2 -> -1; (2+3)*0.5 = 2.5 rounds away from zero to 3 -> 0
    assert requantize(np.array([1, 2], np.int8), q, q2, "int8").tolist() == [-1, 0]
    assert not needs_requant(q, QuantParams(0.1 * (1 + 1e-4), -3))
    assert needs_requant(q, QuantParams(0.1 * 1.01, -3)) and needs_requant(q, QuantParams(0.1, -2))


def test_softmax_is_stable():
    p = softmax(np.array([[1000.0, 0.0], [0.0, 0.0]]))
    np.testing.assert_allclose(p, [[1.0, 0.0], [0.5, 0.5]])


def test_numpy_scalar_threshold_and_empty_batch(int8_rt):
    assert make_policy("max-prob", np.float32(0.9), 3).thresholds[:2] == [pytest.approx(0.9)] * 2
    with pytest.raises(InputError, match="empty"):
        int8_rt.run(np.zeros((0, 1, 8, 8), np.float32))
