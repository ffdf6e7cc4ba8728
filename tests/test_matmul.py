"""GPU tests of pyfast.ops.matmul: every version against pyfast.reference (float64) on awkward
and real shapes, all transposes, bias and ReLU, outputs poisoned with NaN before each call."""

import itertools

import numpy as np
import pytest

from conftest import randn
from pyfast import ops, reference
from pyfast.testing import assert_close, reduction_atol

cupy = pytest.importorskip("cupy")
pytestmark = pytest.mark.gpu

VERSIONS = ops.MATMUL_VERSIONS
TRANSPOSES = list(itertools.product([False, True], repeat=2))


def make_operands(rng, m, n, k, trans_a, trans_b, with_bias):
    a = randn(rng, *((k, m) if trans_a else (m, k)))
    b = randn(rng, *((n, k) if trans_b else (k, n)))
    bias = randn(rng, n) if with_bias else None
    return a, b, bias


def check_matmul(rng, version, m, n, k, trans_a=False, trans_b=False, with_bias=False, activation=None):
    a, b, bias = make_operands(rng, m, n, k, trans_a, trans_b, with_bias)
    out = cupy.full((m, n), np.nan, dtype=cupy.float32)
    got = ops.matmul(cupy.asarray(a), cupy.asarray(b), trans_a=trans_a, trans_b=trans_b,
                     bias=None if bias is None else cupy.asarray(bias), activation=activation,
                     out=out, version=version)
    assert got is out
    expected = reference.matmul(a, b, trans_a=trans_a, trans_b=trans_b, bias=bias, activation=activation)
    assert_close(got, expected, atol=reduction_atol(k), name=f"{version} {m}x{n}x{k} ta={trans_a} tb={trans_b}")


# Sizes around every tile edge (64, 128, 8, 16, the 4-wide vectors) and degenerate ones.
AWKWARD = [(1, 1, 1), (1, 1, 7), (3, 17, 1), (17, 3, 97), (97, 127, 33), (127, 97, 128), (1000, 17, 3),
           (3, 1000, 127), (129, 129, 129), (257, 65, 1000), (65, 257, 9), (64, 128, 16), (130, 66, 17)]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("trans_a,trans_b", TRANSPOSES)
@pytest.mark.parametrize("m,n,k", AWKWARD)
def test_awkward_shapes(rng, version, m, n, k, trans_a, trans_b):
    check_matmul(rng, version, m, n, k, trans_a, trans_b)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("trans_a,trans_b", TRANSPOSES)
@pytest.mark.parametrize("activation", [None, "relu"])
def test_bias_and_relu_epilogue(rng, version, trans_a, trans_b, activation):
    check_matmul(rng, version, 131, 67, 45, trans_a, trans_b, with_bias=True, activation=activation)
    check_matmul(rng, version, 5, 3, 2, trans_a, trans_b, with_bias=False, activation=activation)


# The CNN's fully connected layers, y = relu(x @ w + b) with w (3136, 128), and their gradients.
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("batch", [1, 64, 127, 256, 1024])
def test_cnn_fully_connected_shapes(rng, version, batch):
    check_matmul(rng, version, batch, 128, 3136, with_bias=True, activation="relu")   # forward
    check_matmul(rng, version, batch, 3136, 128, trans_b=True)                        # dx = dy @ w^T
    check_matmul(rng, version, 3136, 128, batch, trans_a=True)                        # dw = x^T @ dy
    check_matmul(rng, version, batch, 10, 128, with_bias=True)                        # logits
    check_matmul(rng, version, 128, 10, batch, trans_a=True)                          # its dw


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("size", [512, 1024, pytest.param(2048, marks=pytest.mark.slow),
                                  pytest.param(4096, marks=pytest.mark.slow)])
def test_square(rng, version, size):
    check_matmul(rng, version, size, size, size)
    if size <= 1024:
        check_matmul(rng, version, size, size, size, trans_a=True, trans_b=True, with_bias=True, activation="relu")


@pytest.mark.parametrize("version", VERSIONS)
def test_k_zero_gives_bias_or_zeros(version):
    a, b = cupy.zeros((70, 0), cupy.float32), cupy.zeros((0, 130), cupy.float32)
    out = ops.matmul(a, b, out=cupy.full((70, 130), np.nan, cupy.float32), version=version)
    assert_close(out, np.zeros((70, 130)), atol=0)
    bias = cupy.linspace(-1, 1, 130, dtype=cupy.float32)
    out = ops.matmul(a, b, bias=bias, activation="relu", version=version)
    assert_close(out, np.tile(np.maximum(bias.get(), 0), (70, 1)), atol=0)


@pytest.mark.parametrize("shape_a,shape_b", [((0, 5), (5, 3)), ((4, 5), (5, 0)), ((0, 0), (0, 0))])
def test_empty_results_return_without_a_launch(shape_a, shape_b):
    out = ops.matmul(cupy.ones(shape_a, cupy.float32), cupy.ones(shape_b, cupy.float32))
    assert out.shape == (shape_a[0], shape_b[1]) and out.dtype == cupy.float32


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("trans_a,trans_b", TRANSPOSES)
def test_misaligned_pointers_take_the_scalar_path(rng, version, trans_a, trans_b):
    """Views starting one float into an allocation: 16-byte loads would fault or misread."""
    m, n, k = 67, 130, 36  # rows whose lengths are multiples of 4, so only the base is off

    def misaligned(array):
        flat = cupy.empty(array.size + 1, cupy.float32)[1:]
        flat[...] = cupy.asarray(array.ravel())
        return flat.reshape(array.shape)

    a, b, bias = make_operands(rng, m, n, k, trans_a, trans_b, True)
    out = misaligned(np.full((m, n), np.nan, np.float32))
    ops.matmul(misaligned(a), misaligned(b), trans_a=trans_a, trans_b=trans_b, bias=misaligned(bias),
               out=out, version=version)
    expected = reference.matmul(a, b, trans_a=trans_a, trans_b=trans_b, bias=bias)
    assert_close(out, expected, atol=reduction_atol(k))


def test_results_are_bitwise_deterministic(rng):
    a, b = cupy.asarray(randn(rng, 300, 500)), cupy.asarray(randn(rng, 500, 200))
    first = ops.matmul(a, b).get()
    for _ in range(3):
        np.testing.assert_array_equal(ops.matmul(a, b).get(), first)


def test_out_must_not_overlap_inputs(rng):
    a = cupy.asarray(randn(rng, 8, 8))
    with pytest.raises(ValueError, match="out: overlaps input a"):
        ops.matmul(a, a, out=a)
    with pytest.raises(ValueError, match=r"out: expected shape \(8, 8\), got \(8, 7\)"):
        ops.matmul(a, a, out=cupy.empty((8, 7), cupy.float32))
    with pytest.raises(TypeError, match="out: expected dtype float32"):
        ops.matmul(a, a, out=cupy.empty((8, 8), cupy.float64))
    with pytest.raises(ValueError, match="out: expected a C-contiguous"):
        ops.matmul(a, a, out=cupy.empty((8, 8), cupy.float32).T)


def test_non_contiguous_cupy_input_is_rejected(rng):
    a = cupy.asarray(randn(rng, 8, 6))
    with pytest.raises(ValueError, match="a: expected a C-contiguous"):
        ops.matmul(a[:, ::2], a[:3])
    with pytest.raises(ValueError, match="a: expected a C-contiguous"):
        ops.matmul(a[::-1], a.T.copy())
    with pytest.raises(ValueError, match="b: expected a C-contiguous"):
        ops.matmul(a, a.T[::-1])


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("trans_a,trans_b", TRANSPOSES)
@pytest.mark.parametrize("view_a,view_b", [(True, False), (False, True), (True, True)])
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (17, 3, 97), (97, 127, 33), (130, 66, 17)])
def test_transposed_views_are_read_as_given(rng, version, trans_a, trans_b, view_a, view_b, m, n, k):
    """x.T of a C-contiguous x (F-contiguous) is the matrix x.T, as in NumPy: the op folds the
    view into its transpose flag instead of refusing it or copying it."""
    a, b, bias = make_operands(rng, m, n, k, trans_a, trans_b, with_bias=True)
    # The same logical operands, stored transposed: the views' data is a C-contiguous transpose.
    a_gpu = cupy.ascontiguousarray(cupy.asarray(a).T).T if view_a else cupy.asarray(a)
    b_gpu = cupy.ascontiguousarray(cupy.asarray(b).T).T if view_b else cupy.asarray(b)
    assert a_gpu.shape == a.shape and (a_gpu.flags.f_contiguous or not view_a)
    out = cupy.full((m, n), np.nan, dtype=cupy.float32)
    got = ops.matmul(a_gpu, b_gpu, trans_a=trans_a, trans_b=trans_b, bias=cupy.asarray(bias), activation="relu",
                     out=out, version=version)
    expected = reference.matmul(a, b, trans_a=trans_a, trans_b=trans_b, bias=bias, activation="relu")
    assert_close(got, expected, atol=reduction_atol(k), name=f"{version} views {view_a},{view_b} {m}x{n}x{k}")


def test_transposed_views_in_reduced_precision_and_from_pytorch(rng):
    a, b = randn(rng, 70, 40), randn(rng, 40, 50)
    a_view = cupy.ascontiguousarray(cupy.asarray(a).T).T
    got = ops.matmul(a_view, cupy.asarray(b), precision="tf32")
    assert_close(got, reference.matmul(a, b, precision="tf32"), atol=reduction_atol(40))
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch has no CUDA")
    b_t = torch.from_numpy(np.ascontiguousarray(b.T)).cuda().t()  # a PyTorch .t() view
    assert_close(ops.matmul(cupy.asarray(a), b_t), reference.matmul(a, b), atol=reduction_atol(40))


def test_runs_on_the_current_stream(rng):
    a, b = randn(rng, 200, 300), randn(rng, 300, 100)
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        out = ops.matmul(cupy.asarray(a), cupy.asarray(b))
    stream.synchronize()
    assert_close(out, reference.matmul(a, b), atol=reduction_atol(300))


def test_pytorch_cuda_tensors_are_accepted(rng):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch has no CUDA")
    a, b, bias = randn(rng, 65, 33), randn(rng, 33, 17), randn(rng, 17)
    out = ops.matmul(torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda(), bias=torch.from_numpy(bias).cuda(),
                     activation="relu")
    assert isinstance(out, cupy.ndarray)
    assert_close(out, reference.matmul(a, b, bias=bias, activation="relu"), atol=reduction_atol(33))
    expected = torch.relu(torch.from_numpy(a).double() @ torch.from_numpy(b).double() + torch.from_numpy(bias))
    assert_close(out, expected.numpy(), atol=reduction_atol(33))
    with pytest.raises(ValueError, match="a: expected a C-contiguous"):
        ops.matmul(torch.from_numpy(a).cuda()[:, ::2], torch.from_numpy(b).cuda()[:17])
    with pytest.raises(TypeError, match="a: expected dtype float32"):
        ops.matmul(torch.from_numpy(a).cuda().double(), torch.from_numpy(b).cuda())


# nn.Linear's layouts at the trainer's batches, where K is split by rule without a tuned plan:
# against the reference, and the same bits on every run.
@pytest.mark.parametrize("batch", [64, 256, 1024])
def test_linear_layouts_split_by_rule_are_right_and_repeatable(rng, batch):
    x, w, b = randn(rng, batch, 3136), randn(rng, 128, 3136), randn(rng, 128)
    dy = randn(rng, batch, 128)
    xg, wg, bg, dyg = (cupy.asarray(a) for a in (x, w, b, dy))
    cases = [(lambda: ops.matmul(xg, wg, trans_b=True, bias=bg, activation="relu"),
              reference.matmul(x, w, trans_b=True, bias=b, activation="relu"), 3136),
             (lambda: ops.matmul(dyg, wg), reference.matmul(dy, w), 128),
             (lambda: ops.matmul(dyg, xg, trans_a=True), reference.matmul(dy, x, trans_a=True), batch)]
    for run, expected, k in cases:
        first = run()
        assert_close(first, expected, atol=reduction_atol(k))
        assert bool((run() == first).all())
