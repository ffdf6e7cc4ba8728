"""matmul's tensor-core precisions (tf32, bf16), split K and the tuning table.

CPU: the operand rounding the reference applies (against exact float64 rounding, PyTorch and
ml_dtypes), the argument rules for precision / version / dtype / plan, the table lookup.
GPU (marked): the tensor-core kernel against the reference with rounded operands (float32-sum
tolerance: the rounding is the only other difference) and against the exact product (the
precision's tolerance), every transpose, awkward shapes, both tile configurations, bf16
storage, split K for every version with any slice count, bitwise repeatability, and a tuning
table entry actually steering a call.
"""

import itertools
import json

import numpy as np
import pytest
from conftest import fake, randn

from pyfast import _arrays, _checks, _tuning, ops, reference
from pyfast.testing import assert_close, reduction_atol

TRANSPOSES = list(itertools.product([False, True], repeat=2))
A, B = fake(4, 3), fake(3, 5)


# ------------------------------------------------------------------ rounding (CPU)
def _round_significand(x, bits, ties_away):
    """x (finite, normal float32) rounded to `bits` significant bits, computed in float64."""
    x = x.astype(np.float64)
    mantissa, exponent = np.frexp(x)  # |mantissa| in [0.5, 1)
    scaled = np.abs(mantissa) * 2.0**bits
    if ties_away:
        rounded = np.floor(scaled + 0.5)
    else:
        rounded = np.round(scaled)  # NumPy rounds half to even
    return np.sign(x) * np.ldexp(rounded / 2.0**bits, exponent)


def _values(rng):
    x = randn(rng, 20000) * np.float32(2.0) ** rng.integers(-20, 20, 20000).astype(np.float32)
    # exact ties for TF32 (1 + 2^-11) and BF16 (1 + 2^-8), either sign, and their neighbours
    ties = np.array([1 + 2**-11, 1 + 3 * 2**-11, 1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-11 - 2**-23], np.float32)
    return np.concatenate([x, ties, -ties])


def test_round_tf32_is_nearest_ties_away(rng):
    x = _values(rng)
    got = reference.round_tf32(x)
    np.testing.assert_array_equal(got.astype(np.float64), _round_significand(x, 11, ties_away=True))
    assert not (got.view(np.uint32) & 0x1FFF).any()  # 13 low mantissa bits cleared
    assert reference.round_tf32(np.float32(1 + 2**-11)) == np.float32(1 + 2**-10)
    assert reference.round_tf32(np.float32(-1 - 2**-11)) == np.float32(-1 - 2**-10)


def test_round_bf16_is_nearest_even(rng):
    x = _values(rng)
    got = reference.round_bf16(x)
    np.testing.assert_array_equal(got.astype(np.float64), _round_significand(x, 8, ties_away=False))
    assert reference.round_bf16(np.float32(1 + 2**-8)) == np.float32(1.0)  # tie to even
    assert reference.round_bf16(np.float32(1 + 3 * 2**-8)) == np.float32(1 + 2**-6)


def test_round_bf16_matches_torch_and_ml_dtypes(rng):
    x = _values(rng)
    checked = 0
    try:
        import torch

        np.testing.assert_array_equal(reference.round_bf16(x), torch.from_numpy(x).bfloat16().float().numpy())
        checked += 1
    except ImportError:
        pass
    try:
        import ml_dtypes

        np.testing.assert_array_equal(reference.round_bf16(x), x.astype(ml_dtypes.bfloat16).astype(np.float32))
        checked += 1
    except ImportError:
        pass
    if not checked:
        pytest.skip("neither torch nor ml_dtypes is installed")


def test_rounding_keeps_nan_and_infinities():
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], np.float32)
    for rounding in (reference.round_tf32, reference.round_bf16):
        got = rounding(special)
        assert np.isnan(got[0]) and got[1] == np.inf and got[2] == -np.inf
        assert got[3] == 0 and got[4] == 0 and np.signbit(got[4])


@pytest.mark.parametrize("precision,digits", [("tf32", 11), ("bf16", 8)])
def test_reference_precision_rounds_operands(rng, precision, digits):
    a, b = randn(rng, 64, 200), randn(rng, 200, 48)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    got = reference.matmul(a, b, precision=precision)
    error = np.abs(got - exact).max()
    # Rounding each operand moves each product by up to 2^-digits relatively: far above
    # float32's error, and within sqrt(k) * 2^-digits * |a||b| for random signs.
    scale = np.abs(a).max() * np.abs(b).max()
    assert error > 50 * reduction_atol(200) / 4
    assert error < 4 * np.sqrt(200) * 2.0**-digits * scale


# ------------------------------------------------------------------ argument rules (CPU)
def test_precision_and_version_rules():
    with pytest.raises(ValueError, match="precision: expected one of"):
        ops.matmul(A, B, precision="fp16")
    with pytest.raises(ValueError, match="version: precision='tf32' runs on version 'tensor_core'"):
        ops.matmul(A, B, precision="tf32", version="tiled")
    with pytest.raises(ValueError, match="version: 'tensor_core' computes in precision"):
        ops.matmul(A, B, version="tensor_core")
    for fn in (ops.matmul, reference.matmul):
        args = (A, B) if fn is ops.matmul else (np.ones((4, 3), np.float32), np.ones((3, 5), np.float32))
        with pytest.raises(ValueError, match="precision"):
            fn(*args, precision="int8")


def test_bfloat16_operands_need_bf16_precision_and_a_pair():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    a16 = np.ones((4, 3), ml_dtypes.bfloat16)
    b16 = np.ones((3, 5), ml_dtypes.bfloat16)
    with pytest.raises(TypeError, match="bfloat16 operands need precision='bf16'"):
        reference.matmul(a16, b16)
    with pytest.raises(TypeError, match="b: expected dtype bfloat16"):
        reference.matmul(a16, np.ones((3, 5), np.float32), precision="bf16")
    with pytest.raises(TypeError, match="a: expected dtype bfloat16"):
        reference.matmul(np.ones((4, 3), np.float32), b16, precision="bf16")
    got = reference.matmul(a16, b16, precision="bf16")
    assert got.dtype == np.float32 and (got == 3).all()


@pytest.mark.parametrize("plan,error", [("fast", TypeError), ((0,), TypeError), ((0, 0), ValueError),
                                        ((0, 65), ValueError), ((-2, 1), ValueError)])
def test_plan_is_checked(plan, error):
    with pytest.raises(error, match="plan"):
        ops.matmul(A, B, plan=plan)
    with pytest.raises(error, match="plan"):
        reference.matmul(np.ones((4, 3), np.float32), np.ones((3, 5), np.float32), plan=plan)


# ------------------------------------------------------------------ tuning table (CPU)
def test_shape_classes_round_log2():
    assert _tuning.shape_class(1000, 1024, 1) == (10, 10, 0)
    assert _tuning.shape_class(64, 3136, 128)[1] == 12  # log2(3136) = 11.6
    assert _tuning.class_key(1, 0, True, False, 64, 128, 3136) == "v1-p0-t10-m6-n7-k12"


@pytest.fixture
def table_path(tmp_path, monkeypatch):
    """A scratch tuning table that pyfast reads instead of the shipped one."""
    path = tmp_path / "matmul_tuning.json"
    monkeypatch.setattr(_tuning, "TABLE_PATH", path)
    _tuning.clear_cache()
    yield path
    _tuning.clear_cache()


def test_lookup_reads_the_table(table_path):
    key = _tuning.class_key(1, 0, False, False, 64, 128, 3136)
    table_path.write_text(json.dumps({"format": 1, "cards": {"Card X": {key: {"plan": [1, 8], "ms": 0.01}}}}))
    assert _tuning.load_table() == {"Card X": {key: (1, 8)}}
    assert _tuning.lookup("Card X", 1, 0, False, False, 64, 128, 3136) == (1, 8)
    assert _tuning.lookup("Card X", 1, 0, False, False, 64, 128, 64) is None  # another class
    assert _tuning.lookup("Card Y", 1, 0, False, False, 64, 128, 3136) is None  # another card
    _tuning.clear_cache()
    table_path.write_text(json.dumps({"format": 99, "cards": {"Card X": {}}}))
    assert _tuning.load_table() == {}
    assert _tuning.load_table(table_path.with_name("missing.json")) == {}


def test_shipped_table_is_well_formed():
    data = json.loads(_tuning.TABLE_PATH.read_text())
    assert data["format"] == _tuning.FORMAT
    for card, classes in data["cards"].items():
        for key, entry in classes.items():
            config, splits = entry["plan"]
            assert key.startswith("v") and config >= 0 and 1 <= splits <= 64, (card, key)


def test_configurations_and_their_tiles():
    C = pytest.importorskip("pyfast._C")
    tiled, tensor_core = ops.MATMUL_VERSIONS.index("tiled"), len(ops.MATMUL_VERSIONS)
    assert C.matmul_config_count(tiled) == 6 and C.matmul_config_count(tensor_core) == 2
    assert [C.matmul_config_tile(tiled, c) for c in range(6)] == [(128, 128), (64, 64), (128, 128), (128, 64),
                                                                  (64, 128), (64, 64)]
    assert C.matmul_config_tile(tensor_core, 1) == (64, 64) and C.matmul_config_tile(tiled, 6) == (0, 0)


# ------------------------------------------------------------------ GPU
cupy = pytest.importorskip("cupy")
gpu = pytest.mark.gpu

AWKWARD = [(1, 1, 1), (3, 17, 5), (17, 3, 97), (97, 127, 33), (127, 97, 128), (129, 129, 129), (257, 65, 1000),
           (65, 257, 9), (1000, 17, 3), (130, 66, 47)]


def _operands(rng, m, n, k, trans_a, trans_b):
    a = randn(rng, *((k, m) if trans_a else (m, k)))
    b = randn(rng, *((n, k) if trans_b else (k, n)))
    return a, b


def check_precision(rng, precision, m, n, k, trans_a=False, trans_b=False, plan=None, bias=False,
                    activation=None, storage=None):
    a, b = _operands(rng, m, n, k, trans_a, trans_b)
    bias_host = randn(rng, n) if bias else None
    if storage is not None:  # bfloat16 operands: round on the host, then store as bfloat16
        a, b = a.astype(storage), b.astype(storage)
    out = cupy.full((m, n), np.nan, dtype=cupy.float32)
    got = ops.matmul(cupy.asarray(a), cupy.asarray(b), trans_a=trans_a, trans_b=trans_b, precision=precision,
                     bias=None if bias_host is None else cupy.asarray(bias_host), activation=activation,
                     out=out, plan=plan)
    assert got is out
    label = f"{precision} {m}x{n}x{k} ta={trans_a} tb={trans_b} plan={plan}"
    # Against the product of the rounded operands: only float32 summation differs (products of
    # TF32 / BF16 values are exact in float32); 8x the FP32 bound for the tensor cores' order.
    rounded = reference.matmul(a, b, trans_a=trans_a, trans_b=trans_b, precision=precision, bias=bias_host,
                               activation=activation)
    assert_close(got, rounded, atol=reduction_atol(k, factor=8.0), name=label)
    return got


@gpu
@pytest.mark.parametrize("precision", ["tf32", "bf16"])
@pytest.mark.parametrize("trans_a,trans_b", TRANSPOSES)
@pytest.mark.parametrize("m,n,k", AWKWARD)
def test_tensor_core_awkward_shapes(rng, precision, m, n, k, trans_a, trans_b):
    check_precision(rng, precision, m, n, k, trans_a, trans_b)


@gpu
@pytest.mark.parametrize("precision", ["tf32", "bf16"])
@pytest.mark.parametrize("config", [0, 1])
@pytest.mark.parametrize("trans_a,trans_b", TRANSPOSES)
def test_tensor_core_every_config(rng, precision, config, trans_a, trans_b):
    check_precision(rng, precision, 300, 260, 200, trans_a, trans_b, plan=(config, 1), bias=True,
                    activation="relu")


@gpu
@pytest.mark.parametrize("config", range(6))
@pytest.mark.parametrize("trans_a,trans_b", TRANSPOSES)
def test_every_tiled_config(rng, config, trans_a, trans_b):
    # The tuner may pick any configuration: each, unsplit and split, on edges of every tile.
    for (m, n, k), splits in [((129, 67, 45), 1), ((300, 260, 200), 3), ((7, 5, 3), 1), ((64, 128, 1000), 7)]:
        a, b = _operands(rng, m, n, k, trans_a, trans_b)
        bias = randn(rng, n)
        out = cupy.full((m, n), cupy.nan, cupy.float32)
        got = ops.matmul(cupy.asarray(a), cupy.asarray(b), trans_a=trans_a, trans_b=trans_b, bias=cupy.asarray(bias),
                         activation="relu", plan=(config, splits), out=out)
        expected = reference.matmul(a, b, trans_a=trans_a, trans_b=trans_b, bias=bias, activation="relu")
        assert_close(got, expected, atol=reduction_atol(k), name=f"config {config} {m}x{n}x{k} split {splits}")


@gpu
@pytest.mark.parametrize("precision,rtol", [("tf32", 5e-3), ("bf16", 4e-2)])
def test_tensor_core_against_exact_product(rng, precision, rtol):
    # The precision's own tolerance against float64 of the unrounded operands (what users see).
    # Rounding each operand to p mantissa bits makes each product's error about 2^-p with random
    # sign: sqrt(k) * 2^-p * 0.8 is one standard deviation of an entry; rtol * sqrt(k) is about
    # ten of them for TF32 (p = 11) and BF16 (p = 8), while a lost k-tile costs about 1.
    m, n, k = 512, 384, 1024
    a, b = randn(rng, m, k), randn(rng, k, n)
    got = ops.matmul(cupy.asarray(a), cupy.asarray(b), precision=precision)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    scale = np.sqrt(k)  # typical |C| for unit normal operands
    assert_close(got, exact, atol=rtol * scale, rtol=0, name=f"{precision} vs exact")


@gpu
@pytest.mark.parametrize("trans_a,trans_b", TRANSPOSES)
def test_bf16_storage(rng, trans_a, trans_b):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    for m, n, k in [(129, 67, 45), (64, 128, 3136), (7, 5, 3)]:
        check_precision(rng, "bf16", m, n, k, trans_a, trans_b, storage=ml_dtypes.bfloat16)


@gpu
def test_bf16_torch_tensors_through_dlpack(rng):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch has no CUDA here")
    a = torch.randn(96, 80, device="cuda").bfloat16()
    b = torch.randn(80, 72, device="cuda").bfloat16()
    got = ops.matmul(a, b, precision="bf16")
    expected = a.double() @ b.double()
    assert_close(got, expected.cpu().numpy(), atol=reduction_atol(80, factor=8.0), name="torch bf16")


@gpu
@pytest.mark.parametrize("version,precision", [("tiled", None), ("tensor_core", "tf32"), ("tensor_core", "bf16")])
@pytest.mark.parametrize("splits", [2, 3, 7, 64])
@pytest.mark.parametrize("m,n,k", [(64, 128, 3136), (3136, 128, 64), (5, 3, 31), (33, 65, 33), (130, 10, 1000),
                                   (1, 1, 4097)])
def test_split_k(rng, version, precision, splits, m, n, k):
    trans = [(False, False), (True, False), (False, True)][(m + splits) % 3]
    if precision is None:
        a, b = _operands(rng, m, n, k, *trans)
        bias = randn(rng, n)
        got = ops.matmul(cupy.asarray(a), cupy.asarray(b), trans_a=trans[0], trans_b=trans[1],
                         bias=cupy.asarray(bias), activation="relu", version=version, plan=(-1, splits))
        expected = reference.matmul(a, b, trans_a=trans[0], trans_b=trans[1], bias=bias, activation="relu")
        assert_close(got, expected, atol=reduction_atol(k), name=f"tiled split {splits} {m}x{n}x{k}")
    else:
        check_precision(rng, precision, m, n, k, *trans, plan=(-1, splits), bias=True, activation="relu")


@gpu
@pytest.mark.parametrize("precision,plan", [(None, (1, 8)), (None, (0, 1)), ("tf32", (1, 8)), ("bf16", (0, 4))])
def test_results_repeat_bit_for_bit(rng, precision, plan):
    a, b = cupy.asarray(randn(rng, 64, 3136)), cupy.asarray(randn(rng, 3136, 128))
    first = ops.matmul(a, b, precision=precision, plan=plan)
    for _ in range(3):
        assert (ops.matmul(a, b, precision=precision, plan=plan) == first).all()


@gpu
def test_unknown_config_is_a_value_error():
    a, b = cupy.ones((4, 3), cupy.float32), cupy.ones((3, 5), cupy.float32)
    with pytest.raises(ValueError, match="plan: config 9 does not exist"):
        ops.matmul(a, b, plan=(9, 1))
    assert (ops.matmul(a, b) == 3).all()  # and the next call is fine


@gpu
def test_tuning_table_steers_the_call(rng, table_path):
    # A table entry for this card and class is used: a split plan gives the split's result.
    m, n, k = 64, 128, 3136
    card = ops._device_name(cupy.cuda.runtime.getDevice())
    key = _tuning.class_key(1, 0, False, False, m, n, k)
    table_path.write_text(json.dumps({"format": 1, "cards": {card: {key: {"plan": [1, 16]}}}}))
    assert _tuning.lookup(card, 1, 0, False, False, m, n, k) == (1, 16)
    a, b = cupy.asarray(randn(rng, m, k)), cupy.asarray(randn(rng, k, n))
    steered = ops.matmul(a, b)
    forced = ops.matmul(a, b, plan=(1, 16))
    assert (steered == forced).all()
    assert_close(steered, reference.matmul(a.get(), b.get()), atol=reduction_atol(k), name="steered")


class _TorchBfloat16Like:
    """What a PyTorch CUDA bfloat16 tensor shows through __cuda_array_interface__: typestr '|V2'."""

    __module__ = "torch.fake"
    dtype = "torch.bfloat16"

    def __init__(self, *shape):
        self.__cuda_array_interface__ = {"shape": shape, "typestr": "|V2", "data": (1 << 20, False), "version": 3}


def test_pytorch_bfloat16_is_recognised_from_its_raw_typestr():
    """The H100 run's failure: a PyTorch bfloat16 tensor arrived as dtype |V2 and matmul asked
    for float32. Its metadata now reads as bfloat16, so the bf16 checks apply (on the CPU)."""
    a, b = _TorchBfloat16Like(4, 3), _TorchBfloat16Like(3, 2)
    assert _checks.is_bfloat16(_arrays.operand("a", a).dtype)
    with pytest.raises(TypeError, match="bfloat16 operands need precision='bf16'"):
        ops.matmul(a, b)
    with pytest.raises(TypeError, match="input: expected dtype float32, got bfloat16"):
        ops.relu(a)
