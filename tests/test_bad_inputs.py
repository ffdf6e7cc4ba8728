"""The bad-input matrix: every op, every array argument, every way an array can be wrong
(NumPy instead of GPU memory, dtype, rank, layout), plus bad sizes and geometry. On the CPU
the arrays are fakes (metadata only: the checks run before any GPU work); on a GPU the same
matrix runs with real CuPy arrays, and after each failure a correct call must still be right."""

import numpy as np
import pytest

from conftest import fake, randn
from pyfast import cpu, ops, reference
from pyfast.testing import assert_close

LABELS = "<i8"
# op name -> (call taking the backend module, then the arrays by name, {argument: shape}, {argument: typestr}
# for non-float arrays)
CALLS = {
    "matmul": (lambda mod, a, b, bias: mod.matmul(a, b, bias=bias), {"a": (4, 3), "b": (3, 5), "bias": (5,)}, {}),
    "relu": (lambda mod, input: mod.relu(input), {"input": (4, 3)}, {}),
    "relu_backward": (lambda mod, dy, y: mod.relu_backward(dy, y), {"dy": (4, 3), "y": (4, 3)}, {}),
    "add_bias": (lambda mod, x, bias: mod.add_bias(x, bias), {"x": (2, 3, 4, 4), "bias": (3,)}, {}),
    "bias_grad": (lambda mod, dy: mod.bias_grad(dy), {"dy": (6, 3)}, {}),
    "mse_loss": (lambda mod, input, target: mod.mse_loss(input, target), {"input": (5, 2), "target": (5, 2)}, {}),
    "softmax_cross_entropy": (lambda mod, logits, labels: mod.softmax_cross_entropy(logits, labels),
                              {"logits": (4, 10), "labels": (4,)}, {"labels": LABELS}),
    "softmax": (lambda mod, input: mod.softmax(input), {"input": (4, 10)}, {}),
    "log_softmax": (lambda mod, input: mod.log_softmax(input), {"input": (4, 10)}, {}),
    "accuracy": (lambda mod, logits, labels: mod.accuracy(logits, labels), {"logits": (4, 10), "labels": (4,)},
                 {"labels": LABELS}),
    "conv2d": (lambda mod, input, weight, bias: mod.conv2d(input, weight, bias, padding=1),
               {"input": (1, 2, 5, 5), "weight": (3, 2, 3, 3), "bias": (3,)}, {}),
    "conv2d_backward_input": (lambda mod, dy, w: mod.conv2d_backward_input(dy, w, (1, 2, 5, 5), padding=1),
                              {"dy": (1, 3, 5, 5), "w": (3, 2, 3, 3)}, {}),
    "conv2d_backward_weight": (lambda mod, dy, x: mod.conv2d_backward_weight(dy, x, (3, 2, 3, 3), padding=1),
                               {"dy": (1, 3, 5, 5), "x": (1, 2, 5, 5)}, {}),
    "max_pool2d": (lambda mod, input: mod.max_pool2d(input, 2, return_indices=True), {"input": (1, 2, 4, 4)}, {}),
    "max_pool2d_backward": (lambda mod, dy, indices: mod.max_pool2d_backward(dy, indices, (1, 2, 4, 4)),
                            {"dy": (1, 2, 2, 2), "indices": (1, 2, 2, 2)}, {"indices": LABELS}),
    "avg_pool2d": (lambda mod, input: mod.avg_pool2d(input, 2), {"input": (1, 2, 4, 4)}, {}),
    "avg_pool2d_backward": (lambda mod, dy: mod.avg_pool2d_backward(dy, (1, 2, 4, 4), 2), {"dy": (1, 2, 2, 2)}, {}),
    "sgd_step": (lambda mod, p, g: mod.sgd_step([p], [g], lr=0.1), {"p": (3, 2), "g": (3, 2)}, {}),
    "adam_step": (lambda mod, p, g, m, v: mod.adam_step([p], [g], [m], [v], step=1),
                  {"p": (3, 2), "g": (3, 2), "m": (3, 2), "v": (3, 2)}, {}),
    "linear_mse_sgd_fit": (lambda mod, x, y, weight, bias: mod.linear_mse_sgd_fit(x, y, weight, bias, lr=0.01, epochs=3),
                           {"x": (10, 3), "y": (10, 2), "weight": (2, 3), "bias": (2,)}, {}),
}
ANY_RANK = {("relu", "input"), ("bias_grad", "dy"), ("softmax", "input"), ("log_softmax", "input")}  # any (N, C, ...) shape is valid: no rank to get wrong
TRANSPOSABLE = {("matmul", "a"), ("matmul", "b")}  # a transposed view is read as such (tests/test_matmul.py)
LIST_ARGS = {"p": "params[0]", "g": "grads[0]", "m": "exp_avg[0]", "v": "exp_avg_sq[0]"}


def _cases():
    for op, (_, shapes, typestrs) in CALLS.items():
        for arg, shape in shapes.items():
            good = typestrs.get(arg, "<f4")
            bad_dtypes = ["<f8", "<f2", "<i4"] if good == "<f4" else ["<f4", "<u1"]
            yield pytest.param(op, arg, "numpy", None, TypeError, id=f"{op}-{arg}-numpy")
            for typestr in bad_dtypes:
                yield pytest.param(op, arg, "dtype", typestr, TypeError, id=f"{op}-{arg}-{typestr}")
            if (op, arg) not in ANY_RANK:
                yield pytest.param(op, arg, "rank", None, ValueError, id=f"{op}-{arg}-rank")
            if len(shape) >= 2 and (op, arg) not in TRANSPOSABLE:
                yield pytest.param(op, arg, "transposed", None, ValueError, id=f"{op}-{arg}-transposed")
            yield pytest.param(op, arg, "strided", None, ValueError, id=f"{op}-{arg}-strided")
            yield pytest.param(op, arg, "reversed", None, ValueError, id=f"{op}-{arg}-negative-stride")


def _bad_fake(kind, shape, typestr, bad_typestr):
    itemsize = np.dtype(typestr).itemsize
    if kind == "numpy":
        return np.zeros(shape, np.dtype(typestr))
    if kind == "dtype":
        return fake(*shape, typestr=bad_typestr)
    if kind == "rank":
        return fake(2, *shape, typestr=typestr)
    if kind == "transposed":  # the .T of the transposed shape: right shape, wrong layout
        strides = [itemsize * int(np.prod(shape[:i])) for i in range(len(shape))]
        return fake(*shape, typestr=typestr, strides=tuple(strides))
    if kind == "strided":  # every other element along the last axis: neither C nor F order
        strides = [2 * itemsize * int(np.prod(shape[i + 1:])) for i in range(len(shape))]
        return fake(*shape, typestr=typestr, strides=tuple(strides))
    # negative strides along the first axis with more than one element
    strides = [itemsize * int(np.prod(shape[i + 1:])) for i in range(len(shape))]
    axis = next((i for i, d in enumerate(shape) if d > 1), 0)
    strides[axis] = -strides[axis]
    return fake(*shape, typestr=typestr, strides=tuple(strides), data=(0x100000, False))


def _bad_array(xp, good, kind, bad_typestr):
    """`good` (NumPy or CuPy) made wrong in one way: dtype, rank or layout."""
    if kind == "dtype":
        return good.astype(np.dtype(bad_typestr))
    if kind == "rank":
        return xp.stack([good, good])
    if kind == "transposed":
        return xp.ascontiguousarray(good.reshape(good.shape[::-1])).T
    if kind == "strided":
        return xp.stack([good, good], axis=-1)[..., 0]
    bad = xp.concatenate([good, good])[::-2] if good.ndim == 1 else good[::-1]
    if bad.flags.c_contiguous:
        pytest.skip("a size-1 axis reversed is still contiguous")
    return bad


LAYOUTS = [case for case in _cases() if case.values[2] in ("transposed", "strided", "reversed")]


@pytest.mark.parametrize("numpy_backend", [reference, cpu], ids=["reference", "cpu"])
@pytest.mark.parametrize("op,arg,kind,bad_typestr,error", LAYOUTS)
def test_numpy_backends_refuse_the_layouts_the_gpu_ops_refuse(rng, op, arg, kind, bad_typestr, error, numpy_backend):
    call, shapes, typestrs = CALLS[op]
    arrays = {name: (np.zeros(shape, typestrs[name]) if name in typestrs else randn(rng, *shape))
              for name, shape in shapes.items()}
    arrays[arg] = _bad_array(np, arrays[arg], kind, bad_typestr)
    with pytest.raises(error) as info:
        call(numpy_backend, **arrays)
    name = LIST_ARGS.get(arg, arg)
    assert str(info.value).startswith(f"{name}: expected a C-contiguous array"), str(info.value)
    assert f"np.ascontiguousarray({name})" in str(info.value)


@pytest.mark.parametrize("numpy_backend", [reference, cpu], ids=["reference", "cpu"])
def test_numpy_backends_read_transposed_matrices_as_matmul_does(rng, numpy_backend):
    a, b = randn(rng, 3, 4), randn(rng, 5, 3)
    assert_close(numpy_backend.matmul(a.T, b.T), a.astype(np.float64).T @ b.T, atol=1e-5)


@pytest.mark.parametrize("op,arg,kind,bad_typestr,error", list(_cases()))
def test_bad_array_argument_is_rejected_by_name(op, arg, kind, bad_typestr, error):
    call, shapes, typestrs = CALLS[op]
    arrays = {name: fake(*shape, typestr=typestrs.get(name, "<f4")) for name, shape in shapes.items()}
    arrays[arg] = _bad_fake(kind, shapes[arg], typestrs.get(arg, "<f4"), bad_typestr)
    with pytest.raises(error) as info:
        call(ops, **arrays)
    message = str(info.value)
    names = {LIST_ARGS.get(name, name) for name in shapes} | {"out", "matmul:"}
    assert any(message.startswith(name) for name in names), message


@pytest.mark.parametrize("call,error,message", [
    (lambda: ops.conv2d(fake(1, 2, 5, 5), fake(3, 2, 3, 3), stride=0), ValueError, "stride: expected values >= 1"),
    (lambda: ops.conv2d(fake(1, 2, 5, 5), fake(3, 2, 3, 3), stride=-2), ValueError, "stride: expected values >= 1"),
    (lambda: ops.conv2d(fake(1, 2, 5, 5), fake(3, 2, 3, 3), padding=-1), ValueError, "padding: expected values >= 0"),
    (lambda: ops.conv2d(fake(1, 2, 5, 5), fake(3, 2, 3, 3), dilation=0), ValueError, "dilation: expected values >= 1"),
    (lambda: ops.conv2d(fake(1, 2, 5, 5), fake(3, 2, 7, 7)), ValueError, "input: padded input size"),
    (lambda: ops.conv2d(fake(1, 2, 5, 5), fake(3, 2, 3, 3), stride=(1, 2, 3)), TypeError, "stride: expected an int"),
    (lambda: ops.conv2d(fake(1, 2, 5, 5), fake(0, 2, 3, 3)), ValueError, "weight: expected a non-empty kernel"),
    (lambda: ops.conv2d_backward_input(fake(1, 3, 5, 5), fake(3, 2, 3, 3), (1, 2, -5, 5), padding=1), ValueError,
     "x_shape: expected a tuple"),
    (lambda: ops.max_pool2d(fake(1, 2, 4, 4), 0, return_indices=True), ValueError, "kernel_size: expected values >= 1"),
    (lambda: ops.max_pool2d(fake(1, 2, 4, 4), 2, stride=0, return_indices=True), ValueError,
     "stride: expected values >= 1"),
    (lambda: ops.avg_pool2d(fake(1, 2, 4, 4), 3, padding=2), ValueError, "padding: expected at most half"),
    (lambda: ops.avg_pool2d(fake(1, 2, 4, 4), 5), ValueError, "input: input 4x4"),
    (lambda: ops.avg_pool2d(fake(1, 2, 4, 4), 2, count_include_pad=1), TypeError, "count_include_pad"),
    (lambda: ops.softmax_cross_entropy(fake(4, 0), fake(4, typestr=LABELS)), ValueError, "logits: expected at least"),
    (lambda: ops.mse_loss(fake(3), fake(3), reduction="max"), ValueError, "reduction:"),
    (lambda: ops.adam_step([fake(3)], [fake(3)], [fake(3)], [fake(3)], step=0), ValueError, "step:"),
    (lambda: ops.adam_step([fake(3)], [fake(3)], [fake(3)], [fake(3)], step=1, lr=-1), ValueError, "lr:"),
    (lambda: ops.sgd_step([fake(3)], [fake(3), fake(3)], lr=0.1), ValueError, "grads: expected 1 arrays"),
    (lambda: ops.matmul(fake(4, 3), fake(3, 5), activation="tanh"), ValueError, "activation:"),
    (lambda: ops.matmul(fake(4, 3), fake(3, 5), precision="fp16"), ValueError, "precision:"),
    (lambda: ops.matmul(fake(4, 3), fake(3, 5), plan=(0, 0)), ValueError, "plan:"),
    (lambda: ops.matmul(fake(4, 3), fake(3, 5), version="simple", precision="bf16"), ValueError, "version:"),
    (lambda: ops.linear_mse_sgd_fit(fake(10, 2), fake(10, 1), fake(1, 2), fake(1), lr=0.1, epochs=-1), ValueError,
     "epochs:"),
])
def test_bad_sizes_and_options(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_reference_backend_rejects_the_same_matrix():
    """The NumPy twins share the shape and option checks (spot checks across families)."""
    x = np.zeros((1, 2, 5, 5), np.float32)
    with pytest.raises(ValueError, match="stride: expected values >= 1"):
        reference.conv2d(x, np.zeros((3, 2, 3, 3), np.float32), stride=0)
    with pytest.raises(TypeError, match="input: expected dtype float32"):
        reference.softmax(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="padding: expected at most half"):
        reference.max_pool2d(x, 2, padding=2, return_indices=True)


# ======================================================================= GPU
@pytest.mark.gpu
@pytest.mark.parametrize("op,arg,kind,bad_typestr,error", [c for c in _cases() if c.values[2] != "numpy"])
def test_gpu_bad_arrays_then_a_correct_call(rng, op, arg, kind, bad_typestr, error):
    """Real CuPy arrays made wrong the same ways; then the library still computes right."""
    import cupy

    call, shapes, typestrs = CALLS[op]

    def real(name, shape, typestr):
        dtype = np.dtype(typestr)
        if dtype.kind == "i":
            return cupy.zeros(shape, dtype)  # valid labels / indices (0)
        return cupy.asarray(randn(rng, *shape)).astype(dtype)

    arrays = {name: real(name, shape, typestrs.get(name, "<f4")) for name, shape in shapes.items()}
    arrays[arg] = _bad_array(cupy, arrays[arg], kind, bad_typestr)
    with pytest.raises(error):
        call(ops, **arrays)
    a, b = randn(rng, 7, 5), randn(rng, 5, 3)
    assert_close(ops.matmul(cupy.asarray(a), cupy.asarray(b)), reference.matmul(a, b), atol=1e-5)


@pytest.mark.gpu
def test_gpu_nan_and_inf_propagate_like_the_reference(rng):
    import cupy

    x = randn(rng, 2, 3, 6, 6)
    x[0, 0, 0, 0], x[1, 2, 3, 3], x[0, 1, 5, 5] = np.nan, np.inf, -np.inf
    w = randn(rng, 4, 3, 3, 3)
    checks = [
        (ops.relu(cupy.asarray(x)), reference.relu(x)),
        (ops.conv2d(cupy.asarray(x), cupy.asarray(w), padding=1), reference.conv2d(x, w, padding=1)),
        (ops.max_pool2d(cupy.asarray(x), 2, return_indices=True)[0], reference.max_pool2d(x, 2,
                                                                                          return_indices=True)[0]),
        (ops.avg_pool2d(cupy.asarray(x), 2), reference.avg_pool2d(x, 2)),
        (ops.softmax(cupy.asarray(x.reshape(6, -1))), reference.softmax(x.reshape(6, -1))),
    ]
    for got, expected in checks:
        np.testing.assert_array_equal(np.isnan(got.get()), np.isnan(expected))
        np.testing.assert_array_equal(np.isinf(got.get()), np.isinf(expected))
