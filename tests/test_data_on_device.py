"""Batches gathered on the device (pyfast.ops.gather_batch, train.fit(data_on_device=...)):
the reference against loops, the same batches and the same training as from the host
(NumPy backend here; the GPU kernel against the reference where a GPU is usable)."""

import numpy as np
import pytest

from conftest import fake, randn
from pyfast import data as datasets
from pyfast import nn, ops, optim, reference, train
from pyfast.testing import assert_close

NUMPY = "numpy"


def loop_gather(x, index, shifts):
    out = np.zeros((len(index), *x.shape[1:]), np.float32)
    h, w = x.shape[-2:]
    for b, source in enumerate(index):
        if not 0 <= source < len(x):
            continue
        dy, dx = shifts[b] if shifts is not None else (0, 0)
        for i in range(h):
            for j in range(w):
                if 0 <= i - dy < h and 0 <= j - dx < w:
                    out[b, ..., i, j] = x[source, ..., i - dy, j - dx]
    return out


@pytest.mark.parametrize("shape", [(7, 1, 5, 6), (9, 3, 4, 4), (5, 2, 3, 1, 7)])
@pytest.mark.parametrize("with_shifts", [False, True])
def test_reference_gather_batch_matches_loops(rng, shape, with_shifts):
    x = randn(rng, *shape)
    index = np.array([3, 0, -1, shape[0], 2, 3], np.int64)  # repeats and two outside the set
    shifts = rng.integers(-4, 5, size=(len(index), 2)).astype(np.int32) if with_shifts else None
    assert_close(reference.gather_batch(x, index, shifts), loop_gather(x, index, shifts), atol=0)


def test_gather_batch_of_a_matrix_and_empty_batches(rng):
    x = randn(rng, 6, 4)
    index = np.array([5, 1], np.int64)
    np.testing.assert_array_equal(reference.gather_batch(x, index), x[index])
    assert reference.gather_batch(x, np.zeros(0, np.int64)).shape == (0, 4)


@pytest.mark.parametrize("call,error,match", [
    (lambda m, a, i: m.gather_batch(a(5), i(3)), ValueError, r"x: expected samples along the first axis"),
    (lambda m, a, i: m.gather_batch(a(5, 2), i(3, dtype=np.int32)), TypeError, "index: expected dtype int64"),
    (lambda m, a, i: m.gather_batch(a(5, 2), i(3, 1)), ValueError, r"index: expected a 1-D array"),
    (lambda m, a, i: m.gather_batch(a(5, 2), i(3), i(3, 2, dtype=np.int32)), ValueError, "shifts: images to shift"),
    (lambda m, a, i: m.gather_batch(a(5, 1, 2, 2), i(3), i(3, 2)), TypeError, "shifts: expected dtype int32"),
    (lambda m, a, i: m.gather_batch(a(5, 1, 2, 2), i(3), i(2, 2, dtype=np.int32)), ValueError,
     r"shifts: expected shape \(3, 2\)"),
])
def test_gather_batch_bad_inputs_on_both_backends(call, error, match):
    def host_int(*shape, dtype=np.int64):
        return np.zeros(shape, dtype)

    def gpu_int(*shape, dtype=np.int64):
        return fake(*shape, typestr=np.dtype(dtype).str)

    with pytest.raises(error, match=match):
        call(reference, lambda *shape: np.zeros(shape, np.float32), host_int)
    with pytest.raises(error, match=match):
        call(ops, fake, gpu_int)


def test_epoch_plan_draws_the_order_then_the_shifts():
    order, shifts = datasets.epoch_plan(10, shuffle=True, rng=np.random.default_rng(4), augment=2)
    rng = np.random.default_rng(4)
    np.testing.assert_array_equal(order, rng.permutation(10))
    np.testing.assert_array_equal(shifts, rng.integers(-2, 3, size=(10, 2)))
    assert order.dtype == np.int64 and shifts.dtype == np.int32
    order, shifts = datasets.epoch_plan(4)
    np.testing.assert_array_equal(order, np.arange(4))
    assert shifts is None


def _batches_of(backend, on_device, x, y, rng_seed):
    source = train.batches.Batches(nn.get_backend(backend), x, y, True, 4, on_device)
    return [tuple(np.array(nn.get_backend(backend).to_numpy(a), copy=True) for a in batch.arrays())
            for batch in source.epoch(shuffle=True, rng=np.random.default_rng(rng_seed), augment=2)]


def test_device_batches_equal_host_batches_for_a_seed(rng):
    x, y = randn(rng, 10, 1, 6, 6), rng.integers(0, 3, 10)
    host = _batches_of(NUMPY, False, x, y, 7)
    resident = _batches_of(NUMPY, True, x, y, 7)
    assert [b[0].shape for b in host] == [(4, 1, 6, 6), (4, 1, 6, 6), (2, 1, 6, 6)]
    for (hx, hy), (dx, dy) in zip(host, resident, strict=True):
        np.testing.assert_array_equal(hx, dx)
        np.testing.assert_array_equal(hy, dy)
    legacy = list(datasets.batches(x, y, 4, shuffle=True, rng=np.random.default_rng(7), augment=2))
    for (hx, hy), (lx, ly) in zip(host, legacy, strict=True):  # data.batches follows the same plan
        np.testing.assert_array_equal(hx, lx)
        np.testing.assert_array_equal(hy, ly)


def _fit(data_on_device, backend=NUMPY, graph=None):
    x, y = datasets.load_digits(size=8)
    x, y = x[:300], y[:300]
    model = train.cnn_model(backend, seed=5, image_size=8)
    optimizer = optim.Adam(model.parameters(), lr=1e-3, capturable=backend != NUMPY)
    history = train.fit(model, nn.CrossEntropyLoss(backend=backend), optimizer, (x[:250], y[:250]),
                        (x[250:], y[250:]), epochs=2, batch_size=64, seed=3, augment=1, progress=False, log=None,
                        data_on_device=data_on_device, graph=graph)
    return history, [np.array(nn.get_backend(backend).to_numpy(p), copy=True) for p in model.parameters()]


def test_fit_with_the_data_on_the_device_trains_bit_for_bit_the_same():
    host_history, host_params = _fit(False)
    device_history, device_params = _fit(True)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert host_history[key] == device_history[key], key
    for a, b in zip(host_params, device_params, strict=True):
        assert np.array_equal(a, b)


def test_data_on_device_must_be_a_bool():
    with pytest.raises(TypeError, match="data_on_device"):
        _fit("yes")


# ======================================================================= GPU
@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(7, 1, 5, 6), (9, 3, 28, 28), (5, 2, 3, 1, 130), (6, 10)])
def test_gpu_gather_batch_against_reference(rng, shape):
    import cupy

    x = randn(rng, *shape)
    index = np.array([3, 0, -1, shape[0], 2, 3, 1], np.int64)
    shifts = rng.integers(-9, 10, size=(len(index), 2)).astype(np.int32) if len(shape) >= 3 else None
    out = cupy.full((len(index), *shape[1:]), cupy.nan, cupy.float32)
    got = ops.gather_batch(cupy.asarray(x), cupy.asarray(index), None if shifts is None else cupy.asarray(shifts),
                           out=out)
    np.testing.assert_array_equal(got.get(), reference.gather_batch(x, index, shifts))


@pytest.mark.gpu
def test_gpu_device_batches_equal_host_batches(rng):
    x, y = randn(rng, 10, 1, 6, 6), rng.integers(0, 3, 10)
    for (hx, hy), (dx, dy) in zip(_batches_of("cuda", False, x, y, 7), _batches_of("cuda", True, x, y, 7),
                                  strict=True):
        np.testing.assert_array_equal(hx, dx)
        np.testing.assert_array_equal(hy, dy)


@pytest.mark.gpu
@pytest.mark.trains
@pytest.mark.parametrize("graph", [False, True])
def test_gpu_fit_with_the_data_on_the_device_trains_bit_for_bit_the_same(graph):
    host_history, host_params = _fit(False, "cuda", graph)
    device_history, device_params = _fit(True, "cuda", graph)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert host_history[key] == device_history[key], key
    for a, b in zip(host_params, device_params, strict=True):
        assert np.array_equal(a, b)
