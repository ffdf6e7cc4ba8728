"""pyfast.cpu, the float32 CPU backend the trainer runs without a GPU, against pyfast.reference,
the float64 oracle: every op on random inputs and awkward shapes, outputs poisoned with NaN,
within float32 rounding (sums run in another order, so the tolerance grows with their length);
max-pooling's indices exactly; NaN, infinities and ties as the reference has them; outputs that
overlap inputs; scratch memory reused across calls and threads."""

import threading

import numpy as np
import pytest

from conftest import randn
from pyfast import cpu, reference
from pyfast.testing import assert_close, reduction_atol


def _poisoned(shape):
    return np.full(shape, np.nan, np.float32)


def test_the_backends_have_the_same_ops():
    assert cpu.__all__ == reference.__all__
    assert all(callable(getattr(cpu, name)) for name in cpu.__all__)


# ------------------------------------------------------------------------------- matmul
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (7, 5, 3), (17, 33, 97), (64, 10, 128), (3, 4, 0), (0, 3, 2)])
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("epilogue", [None, "bias", "bias+relu"])
def test_matmul(rng, m, n, k, trans_a, trans_b, epilogue):
    a = randn(rng, *((k, m) if trans_a else (m, k)))
    b = randn(rng, *((n, k) if trans_b else (k, n)))
    bias = randn(rng, n) if epilogue else None
    activation = "relu" if epilogue == "bias+relu" else None
    expected = reference.matmul(a, b, trans_a=trans_a, trans_b=trans_b, bias=bias, activation=activation)
    out = _poisoned((m, n))
    got = cpu.matmul(a, b, trans_a=trans_a, trans_b=trans_b, bias=bias, activation=activation, out=out)
    assert got is out and got.dtype == np.float32
    assert_close(got, expected, atol=reduction_atol(k, 3.0))


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_matmul_reduced_precisions_round_the_operands_as_the_reference(rng, precision):
    a, b = randn(rng, 9, 40), randn(rng, 40, 6)
    assert_close(cpu.matmul(a, b, precision=precision), reference.matmul(a, b, precision=precision),
                 atol=reduction_atol(40, 3.0))


def test_matmul_transposed_views_and_an_output_that_is_an_input(rng):
    a = randn(rng, 6, 6)
    assert_close(cpu.matmul(a.T, a), reference.matmul(a.T, a), atol=reduction_atol(6, 3.0))
    squared = reference.matmul(a, a)
    assert cpu.matmul(a, a, out=a) is a  # out is also both inputs: read whole first, as the reference does
    assert_close(a, squared, atol=reduction_atol(6, 3.0))


def test_an_output_overlapping_an_input_gets_the_reference_result(rng):
    for op, args in [(cpu.relu, ()), (cpu.softmax, ())]:
        x = randn(rng, 5, 7)
        expected = getattr(reference, op.__name__)(x.copy(), *args)
        assert op(x, *args, out=x) is x
        assert_close(x, expected, atol=1e-6)
    a, b = randn(rng, 4, 4), randn(rng, 4, 4)
    expected = reference.matmul(a, b)
    cpu.matmul(a, b, out=b)
    assert_close(b, expected, atol=reduction_atol(4, 3.0))


# ------------------------------------------------------------------------ element-wise
@pytest.mark.parametrize("shape", [(), (1,), (7, 3), (2, 3, 5, 4)])
def test_relu_and_its_backward_keep_nan(rng, shape):
    x, dy = np.asarray(randn(rng, *shape)), np.asarray(randn(rng, *shape))
    if x.size:
        x.reshape(-1)[0] = np.nan
    assert_close(cpu.relu(x, out=_poisoned(shape)), reference.relu(x), atol=0)
    y = reference.relu(x)
    assert_close(cpu.relu_backward(dy, y, out=_poisoned(shape)), reference.relu_backward(dy, y), atol=0)


@pytest.mark.parametrize("shape", [(5, 3), (2, 3, 5, 4), (1, 1, 1), (0, 4)])
def test_bias_ops(rng, shape):
    x, bias = randn(rng, *shape), randn(rng, shape[1])
    assert_close(cpu.add_bias(x, bias, out=_poisoned(shape)), reference.add_bias(x, bias), atol=1e-6)
    rows = int(np.prod(shape)) // shape[1]
    assert_close(cpu.bias_grad(x, out=_poisoned(shape[1:2])), reference.bias_grad(x), atol=reduction_atol(rows))


def test_gather_batch_is_the_reference(rng):
    x = randn(rng, 10, 1, 5, 6)
    index = np.array([3, 0, 9, 12, -1], np.int64)
    shifts = rng.integers(-2, 3, (5, 2)).astype(np.int32)
    np.testing.assert_array_equal(cpu.gather_batch(x, index, shifts), reference.gather_batch(x, index, shifts))


# ------------------------------------------------------------------------------ losses
@pytest.mark.parametrize("rows,classes", [(1, 1), (4, 10), (64, 10), (33, 1000), (0, 5)])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy(rng, rows, classes, reduction):
    logits = randn(rng, rows, classes, scale=4.0)
    labels = rng.integers(0, classes, rows)
    loss, grad = cpu.softmax_cross_entropy(logits, labels, reduction=reduction, out_grad=_poisoned((rows, classes)))
    expected_loss, expected_grad = reference.softmax_cross_entropy(logits, labels, reduction=reduction)
    assert loss.shape == () and loss.dtype == np.float32
    assert_close(loss, expected_loss, atol=1e-5 * max(rows, 1))
    assert_close(grad, expected_grad, atol=1e-6)
    assert_close(cpu.softmax(logits), reference.softmax(logits), atol=1e-6)
    assert_close(cpu.log_softmax(logits), reference.log_softmax(logits), atol=reduction_atol(classes, 4.0))
    assert int(cpu.accuracy(logits, labels)) == int(reference.accuracy(logits, labels))


def test_softmax_of_infinities_and_nan_as_the_reference():
    logits = np.array([[np.inf, 0.0, 1.0], [np.nan, 0.0, 1.0], [-np.inf, 0.0, 1.0], [-np.inf, -np.inf, 2.0]],
                      np.float32)
    for op in ("softmax", "log_softmax"):
        assert_close(getattr(cpu, op)(logits), getattr(reference, op)(logits), atol=1e-6, name=op)
    assert int(cpu.accuracy(logits, np.array([0, 2, 2, 2]))) == int(reference.accuracy(logits, np.array([0, 2, 2, 2])))


@pytest.mark.parametrize("shape", [(1,), (100, 1), (7, 3, 5)])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mse(rng, shape, reduction):
    pred, target = randn(rng, *shape), randn(rng, *shape)
    loss, grad = cpu.mse_loss(pred, target, reduction=reduction, out_grad=_poisoned(shape))
    expected_loss, expected_grad = reference.mse_loss(pred, target, reduction=reduction)
    assert_close(loss, expected_loss, atol=1e-6, rtol=1e-6)
    assert_close(grad, expected_grad, atol=1e-6)


# -------------------------------------------------------------------------- optimizers
@pytest.mark.parametrize("momentum,nesterov,weight_decay", [(0.0, False, 0.0), (0.9, False, 0.01), (0.9, True, 0.0)])
def test_sgd_steps(rng, momentum, nesterov, weight_decay):
    shapes = [(7, 3), (5,)]
    params = [randn(rng, *s) for s in shapes]
    ours, theirs = [p.copy() for p in params], [p.copy() for p in params]
    velocity = ([np.zeros(s, np.float32) for s in shapes], [np.zeros(s, np.float32) for s in shapes])
    for _ in range(3):
        grads = [randn(rng, *s) for s in shapes]
        kwargs = dict(lr=0.1, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
        cpu.sgd_step(ours, grads, velocity=velocity[0], **kwargs)
        reference.sgd_step(theirs, grads, velocity=velocity[1], **kwargs)
    for mine, expected in zip(ours, theirs):
        assert_close(mine, expected, atol=1e-5)


@pytest.mark.parametrize("decoupled,weight_decay", [(True, 0.0), (True, 0.01), (False, 0.01)])
def test_adam_steps(rng, decoupled, weight_decay):
    shapes = [(64, 3, 3, 3), (64,), (3136, 12)]
    params = [randn(rng, *s) for s in shapes]
    ours, theirs = [p.copy() for p in params], [p.copy() for p in params]
    state = [[[np.zeros(s, np.float32) for s in shapes] for _ in range(2)] for _ in range(2)]
    counter = np.zeros((), np.int64)
    for step in range(1, 4):
        grads = [randn(rng, *s) for s in shapes]
        kwargs = dict(lr=1e-2, weight_decay=weight_decay, decoupled=decoupled)
        cpu.adam_step(ours, grads, *state[0], step=counter, **kwargs)
        reference.adam_step(theirs, grads, *state[1], step=step, **kwargs)
    assert int(counter) == 3
    for mine, expected in zip(ours + state[0][0] + state[0][1], theirs + state[1][0] + state[1][1]):
        assert_close(mine, expected, atol=1e-5, rtol=1e-4)


def test_linear_fit(rng):
    x, y = randn(rng, 100, 3), randn(rng, 100, 2)
    weights = [randn(rng, 2, 3)] * 2
    weights[1] = weights[0].copy()
    biases = [np.zeros(2, np.float32) for _ in range(2)]
    losses = cpu.linear_mse_sgd_fit(x, y, weights[0], biases[0], lr=0.05, epochs=50)
    expected = reference.linear_mse_sgd_fit(x, y, weights[1], biases[1], lr=0.05, epochs=50)
    assert_close(losses, expected, atol=1e-5, rtol=1e-5)
    assert_close(weights[0], weights[1], atol=1e-5)
    assert_close(biases[0], biases[1], atol=1e-5)


# --------------------------------------------------------------- convolution and pooling
CONVS = [  # x shape, w shape, stride, padding, dilation
    ((2, 3, 7, 9), (4, 3, 3, 3), 1, 1, 1),
    ((64, 1, 28, 28), (32, 1, 3, 3), 1, 1, 1),  # the CNN's first layer
    ((5, 32, 14, 14), (64, 32, 3, 3), 1, 1, 1),  # and its second
    ((1, 5, 11, 9), (4, 5, 3, 2), 1, 0, 1),
    ((3, 2, 13, 10), (3, 2, 5, 5), 2, 2, 1),
    ((2, 3, 12, 11), (5, 3, 3, 3), (2, 1), (1, 0), (1, 2)),
    ((2, 4, 6, 6), (3, 4, 1, 1), 1, 0, 1),  # 1x1: the columns are the input itself
    ((2, 4, 9, 9), (3, 4, 1, 1), 2, 1, 1),
    ((1, 1, 1, 1), (1, 1, 1, 1), 1, 0, 1),
    ((0, 2, 5, 5), (3, 2, 3, 3), 1, 1, 1),  # an empty batch
]


@pytest.mark.parametrize("x_shape,w_shape,stride,padding,dilation", CONVS)
def test_convolution_every_pass(rng, x_shape, w_shape, stride, padding, dilation):
    x, w, bias = randn(rng, *x_shape), randn(rng, *w_shape), randn(rng, w_shape[0])
    geometry = dict(stride=stride, padding=padding, dilation=dilation)
    length = int(np.prod(w_shape[1:]))
    for activation in (None, "relu"):
        expected = reference.conv2d(x, w, bias, activation=activation, **geometry)
        got = cpu.conv2d(x, w, bias, activation=activation, out=_poisoned(expected.shape), **geometry)
        assert_close(got, expected, atol=reduction_atol(length, 3.0), name=f"forward {activation}")
    dy = randn(rng, *expected.shape)
    assert_close(cpu.conv2d_backward_input(dy, w, x_shape, out=_poisoned(x_shape), **geometry),
                 reference.conv2d_backward_input(dy, w, x_shape, **geometry),
                 atol=reduction_atol(w_shape[0] * w_shape[2] * w_shape[3], 3.0), name="input gradient")
    dw, db = cpu.conv2d_backward_weight(dy, x, w_shape, bias=True, out=_poisoned(w_shape),
                                        out_bias=_poisoned(w_shape[:1]), **geometry)
    expected_dw, expected_db = reference.conv2d_backward_weight(dy, x, w_shape, bias=True, **geometry)
    positions = int(np.prod(expected.shape)) // w_shape[0]
    assert_close(dw, expected_dw, atol=reduction_atol(positions, 3.0), name="weight gradient")
    assert_close(db, expected_db, atol=reduction_atol(positions), name="bias gradient")


@pytest.mark.parametrize("x_shape,w_shape,padding", [((3, 2, 8, 10), (4, 2, 3, 3), 1), ((64, 32, 14, 14),
                                                                                       (64, 32, 3, 3), 1),
                                                     ((2, 3, 9, 7), (5, 3, 2, 2), 0)])
def test_convolution_then_pooling(rng, x_shape, w_shape, padding):
    x, w, bias = randn(rng, *x_shape), randn(rng, *w_shape), randn(rng, w_shape[0])
    for activation in (None, "relu"):
        expected, expected_indices = reference.conv2d_max_pool2d(x, w, bias, padding=padding, activation=activation)
        indices = np.full(expected.shape, -7, np.int64)
        got, got_indices = cpu.conv2d_max_pool2d(x, w, bias, padding=padding, activation=activation,
                                                 out=_poisoned(expected.shape), out_indices=indices)
        assert got_indices is indices
        assert_close(got, expected, atol=reduction_atol(np.prod(w_shape[1:]), 3.0))
        # A near tie may go either way after float32 rounding; elsewhere the winners agree.
        agree = np.mean(got_indices == expected_indices)
        assert agree > 0.99, agree


POOLS = [  # x shape, kernel, stride, padding
    ((2, 3, 8, 8), 2, None, 0),
    ((64, 32, 28, 28), 2, None, 0),
    ((2, 3, 7, 9), 3, 1, 1),
    ((2, 3, 7, 9), 3, 2, 1),
    ((1, 2, 9, 7), (2, 3), (1, 2), (1, 0)),
    ((3, 1, 5, 5), 5, 1, 2),
    ((1, 1, 1, 1), 1, 1, 0),
    ((0, 2, 4, 4), 2, 2, 0),
]


def _with_nan_inf_and_ties(rng, shape):
    x = randn(rng, *shape)
    if x.size:
        flat = x.reshape(-1)
        flat[rng.integers(0, x.size, 3)] = np.nan
        flat[rng.integers(0, x.size, 2)] = np.inf
        flat[rng.integers(0, x.size, 2)] = -np.inf
        x[..., 1::3, :] = np.round(x[..., 1::3, :])  # ties between whole numbers
        x[..., ::4, ::3] = -1.5  # ties at a negative value (a ReLU makes them all 0)
    return x


@pytest.mark.parametrize("x_shape,kernel,stride,padding", POOLS)
@pytest.mark.parametrize("activation,with_bias", [(None, False), ("relu", False), ("relu", True)])
def test_max_pool_and_its_gradient(rng, x_shape, kernel, stride, padding, activation, with_bias):
    x = _with_nan_inf_and_ties(rng, x_shape)
    bias = randn(rng, x_shape[1]) if with_bias else None
    expected, expected_indices = reference.max_pool2d(x, kernel, stride, padding, bias=bias, activation=activation,
                                                      return_indices=True)
    got, indices = cpu.max_pool2d(x, kernel, stride, padding, bias=bias, activation=activation,
                                  out=_poisoned(expected.shape), return_indices=True)
    assert_close(got, expected, atol=0)
    np.testing.assert_array_equal(indices, expected_indices)
    dy = randn(rng, *expected.shape)
    relu_output = expected if activation else None
    for window in ((kernel, stride, padding), ()):  # with the window, and the scatter form without it
        expected_dx = reference.max_pool2d_backward(dy, indices, x_shape, *window,
                                                    relu_output=relu_output if window else None)
        got_dx = cpu.max_pool2d_backward(dy, indices, x_shape, *window, relu_output=relu_output if window else None,
                                         out=_poisoned(x_shape))
        assert_close(got_dx, expected_dx, atol=1e-6)


def test_max_pool_windows_of_only_minus_infinity_keep_their_first_element_inside():
    x = np.full((1, 1, 3, 3), -np.inf, np.float32)
    for padding in (0, 1):
        _, expected = reference.max_pool2d(x, 3, 1, padding, return_indices=True)
        np.testing.assert_array_equal(cpu.max_pool2d(x, 3, 1, padding, return_indices=True)[1], expected)


def test_max_pool_gradient_refuses_indices_outside_their_windows(rng):
    x = randn(rng, 1, 1, 4, 4)
    y, indices = cpu.max_pool2d(x, 2, return_indices=True)
    dy = np.ones_like(y)
    moved = indices.copy()
    moved[0, 0, 0, 0] = 10  # inside the plane, in another window
    with pytest.raises(ValueError, match="indices: expected each index inside its own window"):
        cpu.max_pool2d_backward(dy, moved, x.shape, 2)
    moved[0, 0, 0, 0] = 16
    with pytest.raises(ValueError, match=r"indices: expected flat indices in \[0, 16\)"):
        cpu.max_pool2d_backward(dy, moved, x.shape, 2)
    padded = randn(rng, 1, 1, 5, 5)
    _, indices = cpu.max_pool2d(padded, 3, 2, 1, return_indices=True)
    indices[0, 0, 0, 1] = 4  # the previous row's end: left of a window that starts in the padding
    with pytest.raises(ValueError, match="inside its own window"):
        cpu.max_pool2d_backward(np.ones((1, 1, 3, 3), np.float32), indices, padded.shape, 3, 2, 1)


@pytest.mark.parametrize("x_shape,kernel,stride,padding", POOLS)
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_pool_and_its_gradient(rng, x_shape, kernel, stride, padding, count_include_pad):
    x = randn(rng, *x_shape)
    expected = reference.avg_pool2d(x, kernel, stride, padding, count_include_pad=count_include_pad)
    assert_close(cpu.avg_pool2d(x, kernel, stride, padding, count_include_pad=count_include_pad,
                                out=_poisoned(expected.shape)),
                 expected, atol=1e-6)
    dy = randn(rng, *expected.shape)
    assert_close(cpu.avg_pool2d_backward(dy, x_shape, kernel, stride, padding, count_include_pad=count_include_pad,
                                         out=_poisoned(x_shape)),
                 reference.avg_pool2d_backward(dy, x_shape, kernel, stride, padding,
                                               count_include_pad=count_include_pad), atol=1e-6)


# ---------------------------------------------------------------------------- scratch
def test_scratch_memory_is_reused_and_never_leaks_one_call_into_the_next(rng):
    """Padded planes keep their zero (or -inf) border across calls with other data, and a
    second call with the same shapes gets the same memory."""
    cpu.clear_scratch()
    w = randn(rng, 3, 2, 3, 3)
    for _ in range(3):
        x = randn(rng, 2, 2, 6, 6, scale=100.0)
        assert_close(cpu.conv2d(x, w, padding=2), reference.conv2d(x, w, padding=2), atol=reduction_atol(18, 300))
        dy = randn(rng, 2, 3, 8, 8)
        assert_close(cpu.conv2d_backward_input(dy, w, x.shape, padding=2),
                     reference.conv2d_backward_input(dy, w, x.shape, padding=2), atol=reduction_atol(27, 3))
        big = -np.abs(randn(rng, 2, 2, 6, 6)) - 10
        np.testing.assert_array_equal(cpu.max_pool2d(big, 3, 1, 1, return_indices=True)[1],
                                      reference.max_pool2d(big, 3, 1, 1, return_indices=True)[1])
    before = cpu._scratch("columns", (2, 2, 3, 3, 8, 8))
    cpu.conv2d(x, w, padding=2)
    assert cpu._scratch("columns", (2, 2, 3, 3, 8, 8)) is before


def test_threads_have_their_own_scratch(rng):
    inputs = [(randn(rng, 8, 4, 12, 12), randn(rng, 6, 4, 3, 3)) for _ in range(4)]
    expected = [reference.conv2d(x, w, padding=1) for x, w in inputs]
    results, errors = [None] * 4, []

    def work(i):
        try:
            for _ in range(20):
                results[i] = cpu.conv2d(*inputs[i], padding=1)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for got, want in zip(results, expected):
        assert_close(got, want, atol=reduction_atol(36, 3.0))
