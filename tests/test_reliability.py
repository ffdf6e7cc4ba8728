"""Determinism, tensors past 32-bit indexing, and out-of-memory behaviour."""

import numpy as np
import pytest

from pyfast import nn, ops, optim, train
from pyfast import data as datasets
from pyfast.testing import assert_close


def _train_losses(backend, seed, steps=8):
    model = train.cnn_model(backend, seed=seed, image_size=8)
    loss, opt = nn.CrossEntropyLoss(backend=model.backend), optim.Adam(model, lr=1e-3)
    x, y = datasets.load_digits(8)
    losses = []
    for xb, yb in list(datasets.batches(x, y, 64, shuffle=True, rng=np.random.default_rng(seed)))[:steps]:
        value, grad = loss(model.forward(model.backend.asarray(xb)), model.backend.asarray(yb, dtype=np.int64))
        model.backward(grad)
        opt.step()
        losses.append(float(value))
    return losses


def test_two_trainer_runs_with_one_seed_are_identical_on_numpy():
    assert _train_losses("numpy", seed=5) == _train_losses("numpy", seed=5)
    assert _train_losses("numpy", seed=5) != _train_losses("numpy", seed=6)


# ======================================================================= GPU
gpu = pytest.mark.gpu


@gpu
def test_two_trainer_runs_with_one_seed_are_identical_on_cuda():
    assert _train_losses("cuda", seed=5) == _train_losses("cuda", seed=5)


@gpu
def test_every_op_is_bitwise_repeatable(rng):
    """Fixed reduction orders everywhere: the same inputs give the same bits on every run."""
    import cupy

    def r(*shape):
        return cupy.asarray(rng.standard_normal(shape).astype(np.float32))

    x, w, dy = r(16, 8, 15, 15), r(12, 8, 3, 3), r(16, 12, 15, 15)
    labels = cupy.asarray(rng.integers(0, 300, 512))
    logits, a, b = r(512, 300), r(300, 200), r(200, 100)
    pooled, indices = ops.max_pool2d(x, 3, 1, 1, return_indices=True)
    fit_x, fit_y, fit_w = r(300, 8), r(300, 2), r(2, 8)
    calls = [
        lambda: ops.matmul(a, b), lambda: ops.bias_grad(dy), lambda: ops.conv2d(x, w, padding=1),
        lambda: ops.conv2d_backward_input(dy, w, x.shape, padding=1),
        lambda: ops.conv2d_backward_weight(dy, x, w.shape, padding=1),
        lambda: ops.max_pool2d_backward(pooled, indices, x.shape), lambda: ops.avg_pool2d_backward(x, x.shape, 3, 1, 1),
        lambda: ops.softmax_cross_entropy(logits, labels)[1], lambda: ops.softmax_cross_entropy(logits, labels)[0],
        lambda: ops.mse_loss(a, a * 0.5)[0],
        lambda: ops.matmul(a, b, precision="tf32"), lambda: ops.matmul(a, b, precision="bf16", plan=(-1, 3)),
        lambda: ops.matmul(a, b, plan=(3, 4)),
        lambda: ops.conv2d_backward_weight(dy, x, w.shape, padding=1, version="implicit"),
        lambda: ops.conv2d_backward_input(dy, w, x.shape, padding=1, version="implicit"),
        # fresh weights per call (the fit updates them in place); the losses are compared
        lambda: ops.linear_mse_sgd_fit(fit_x, fit_y, fit_w.copy(), cupy.zeros(2, cupy.float32), lr=0.01, epochs=20),
    ]
    for call in calls:
        first = call().get()
        for _ in range(2):
            np.testing.assert_array_equal(call().get(), first)


def _need_free_bytes(nbytes):
    import cupy

    free, _ = cupy.cuda.runtime.memGetInfo()
    if free < nbytes:
        pytest.skip(f"needs {nbytes / 2**30:.0f} GiB of free GPU memory, {free / 2**30:.0f} GiB free")


@gpu
@pytest.mark.slow
def test_elementwise_and_loss_past_2_31_elements():
    import cupy

    n = (1 << 31) + 7
    _need_free_bytes(4 * 4 * n)
    x = cupy.empty(n, cupy.float32)
    x[: n // 2] = -1.0
    x[n // 2:] = 2.0
    x[-1] = -3.0
    y = ops.relu(x)
    assert float(y[n // 2 - 1]) == 0.0 and float(y[n // 2]) == 2.0 and float(y[-2]) == 2.0 and float(y[-1]) == 0.0
    assert int(cupy.count_nonzero(y)) == n - n // 2 - 1
    del y
    target = cupy.zeros(n, cupy.float32)
    loss, grad = ops.mse_loss(x, target, reduction="sum")
    expected = (n // 2) * 1.0 + (n - n // 2 - 1) * 4.0 + 9.0
    assert_close(loss, expected, atol=0, rtol=1e-5)
    assert float(grad[-1]) == -6.0 and float(grad[0]) == -2.0


@gpu
@pytest.mark.slow
def test_pooling_past_2_31_elements():
    import cupy

    shape = (2, 1, 32768, 32770)  # 2^31 + 131072 elements
    _need_free_bytes(4 * 2 * int(np.prod(shape)))
    x = cupy.zeros(shape, cupy.float32)
    x[1, 0, -2, -2] = 5.0  # inside the last full 2x2 window of the second image
    y, indices = ops.max_pool2d(x, 2, return_indices=True)
    assert float(y[1, 0, -1, -1]) == 5.0
    assert int(indices[1, 0, -1, -1]) == (shape[2] - 2) * shape[3] + shape[3] - 2
    assert float(y.sum()) == 5.0


@gpu
def test_out_of_memory_is_an_exception_and_the_library_still_works(rng):
    import cupy

    _, total = cupy.cuda.runtime.memGetInfo()
    side = int((total / 4) ** 0.5) + 1024  # one side^2 float32 array outgrows the card
    a = cupy.ones((side, 1), cupy.float32)
    with pytest.raises(cupy.cuda.memory.OutOfMemoryError):
        ops.matmul(a, a, trans_b=True)
    small = rng.standard_normal((5, 4)).astype(np.float32)
    assert_close(ops.relu(cupy.asarray(small)), np.maximum(small, 0), atol=0)
