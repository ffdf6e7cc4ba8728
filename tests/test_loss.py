"""Losses and the softmax family: the NumPy reference by hand and by finite differences (CPU),
then every GPU op against it (outputs poisoned with NaN first) and against PyTorch."""

import numpy as np
import pytest

from conftest import fake, numeric_gradient, randn
from pyfast import ops, reference
from pyfast.testing import assert_close, reduction_atol

try:
    import cupy
except ImportError:  # the CPU tests below do not need it
    cupy = None


def labels_for(rng, rows, classes, dtype=np.int64):
    return rng.integers(0, classes, size=rows).astype(dtype)


# ============================================================ CPU: the reference itself
def test_mse_by_hand():
    pred, target = np.array([1.0, 2.0, 3.0], np.float32), np.array([0.0, 2.0, 5.0], np.float32)
    loss, grad = reference.mse_loss(pred, target)
    assert loss.shape == () and loss.dtype == np.float32
    assert_close(loss, 5.0 / 3.0, atol=1e-7)
    assert_close(grad, np.array([2.0, 0.0, -4.0]) / 3.0, atol=1e-7)
    loss, grad = reference.mse_loss(pred, target, reduction="sum")
    assert_close(loss, 5.0, atol=0)
    assert_close(grad, [2.0, 0.0, -4.0], atol=0)


def test_cross_entropy_by_hand():
    logits = np.array([[0.0, 0.0], [np.log(3.0), 0.0]], np.float32)
    loss, grad = reference.softmax_cross_entropy(logits, np.array([1, 0]), reduction="sum")
    assert_close(loss, np.log(2.0) + np.log(4.0 / 3.0), atol=1e-6)
    assert_close(grad, [[0.5, -0.5], [-0.25, 0.25]], atol=1e-7)
    loss_mean, grad_mean = reference.softmax_cross_entropy(logits, np.array([1, 0], np.int32))
    assert_close(loss_mean, loss / 2, atol=1e-7)
    assert_close(grad_mean, grad / 2, atol=1e-7)


def test_loss_gradients_by_finite_differences(rng):
    pred, target = randn(rng, 3, 4), randn(rng, 3, 4)
    assert_close(reference.mse_loss(pred, target)[1],
                 numeric_gradient(lambda: float(reference.mse_loss(pred, target)[0]), pred),
                 atol=2e-3, rtol=2e-3)
    logits, labels = randn(rng, 5, 7, scale=2.0), labels_for(rng, 5, 7)
    assert_close(reference.softmax_cross_entropy(logits, labels)[1],
                 numeric_gradient(lambda: float(reference.softmax_cross_entropy(logits, labels)[0]), logits,
                                  h=1e-2),
                 atol=2e-3, rtol=2e-3)


def test_extreme_logits_stay_finite():
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, -1e4]], np.float32)
    loss, grad = reference.softmax_cross_entropy(logits, np.array([1, 2, 0]))
    assert np.isfinite(loss) and np.isfinite(grad).all()
    assert_close(loss, (2e4 + np.log(3.0) + np.log(2.0)) / 3, atol=1e-3, rtol=1e-6)


def test_softmax_backward_by_finite_differences(rng):
    x, dy = randn(rng, 3, 5, 4, scale=2.0), randn(rng, 3, 5, 4)
    for dim in (1, -1):
        for forward, backward in ((reference.softmax, reference.softmax_backward),
                                  (reference.log_softmax, reference.log_softmax_backward)):
            expected = numeric_gradient(lambda: float((forward(x, dim).astype(np.float64) * dy).sum()), x)
            assert_close(backward(dy, forward(x, dim), dim), expected, atol=2e-3, rtol=2e-3)


def test_softmax_family_and_accuracy():
    logits = np.array([[1.0, 3.0, 3.0], [np.nan, 0.0, -1.0], [2.0, 1.0, 0.0]], np.float32)
    p = reference.softmax(logits[[0, 2]])
    assert_close(p.sum(axis=1), [1.0, 1.0], atol=1e-6)
    assert_close(reference.log_softmax(logits[[0, 2]]), np.log(p.astype(np.float64)), atol=1e-6)
    # Ties go to the first maximum (index 1); NaN counts as -inf (row 1 -> index 1).
    assert int(reference.accuracy(logits, np.array([1, 1, 0]))) == 3
    assert int(reference.accuracy(logits, np.array([2, 0, 1], np.int32))) == 0


def test_reference_rejects_bad_labels_and_options():
    logits = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"labels: 2 label\(s\) outside \[0, 4\)"):
        reference.softmax_cross_entropy(logits, np.array([0, 4, -1]))
    with pytest.raises(TypeError, match="labels: expected dtype int32 or int64, got float32"):
        reference.softmax_cross_entropy(logits, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r"labels: expected shape \(3,\), got \(4,\)"):
        reference.softmax_cross_entropy(logits, np.zeros(4, np.int64))
    with pytest.raises(ValueError, match="reduction: expected one of"):
        reference.mse_loss(logits, logits, reduction="max")
    with pytest.raises(ValueError, match=r"target: expected shape \(3, 4\)"):
        reference.mse_loss(logits, logits.T.copy())


def test_mean_of_nothing_is_nan():
    empty = np.zeros((0, 3), np.float32)
    assert np.isnan(reference.mse_loss(empty, empty)[0])
    assert float(reference.mse_loss(empty, empty, reduction="sum")[0]) == 0.0
    assert np.isnan(reference.softmax_cross_entropy(empty, np.zeros(0, np.int64))[0])


# ======================================================= CPU: argument checks of the ops
def test_gpu_loss_argument_checks_without_touching_memory():
    with pytest.raises(TypeError, match="labels: expected dtype int32 or int64, got float32"):
        ops.softmax_cross_entropy(fake(4, 10), fake(4))
    with pytest.raises(ValueError, match=r"labels: expected shape \(4,\), got \(5,\)"):
        ops.softmax_cross_entropy(fake(4, 10), fake(5, typestr="<i8"))
    with pytest.raises(ValueError, match="logits: expected at least one class"):
        ops.softmax_cross_entropy(fake(4, 0), fake(4, typestr="<i4"))
    with pytest.raises(ValueError, match=r"logits: expected a 2-D array \(N, C\)"):
        ops.accuracy(fake(4, 10, 2), fake(4, typestr="<i4"))
    with pytest.raises(ValueError, match=r"target: expected shape \(4, 10\), got \(10, 4\)"):
        ops.mse_loss(fake(4, 10), fake(10, 4))
    with pytest.raises(ValueError, match="reduction: expected one of"):
        ops.mse_loss(fake(4), fake(4), reduction="batchmean")
    with pytest.raises(TypeError, match="validate: expected True or False"):
        ops.softmax_cross_entropy(fake(4, 10), fake(4, typestr="<i4"), validate="yes")
    with pytest.raises(ValueError, match="labels: expected a C-contiguous"):
        ops.softmax_cross_entropy(fake(4, 10), fake(4, typestr="<i4", strides=(8,)))


# ======================================================================= GPU
gpu = pytest.mark.gpu

CE_ROWS = [1, 7, 128, 1000, 65536]
CE_CLASSES = [1, 2, 10, 1000, 32768, 40000]  # 40000: wider than a block's registers hold


def ce_case_marks(rows, classes):
    size = rows * classes
    if size > 1 << 26:
        return [pytest.mark.skip(reason="larger than the test budget (the benchmark covers 65536 x 1000)")]
    return [pytest.mark.slow] if size > 1 << 22 else []


def check_cross_entropy(rng, rows, classes, label_dtype=np.int64, reduction="mean", scale=3.0):
    logits, labels = randn(rng, rows, classes, scale=scale), labels_for(rng, rows, classes, label_dtype)
    grad_out = cupy.full((rows, classes), cupy.nan, cupy.float32)
    loss, grad = ops.softmax_cross_entropy(cupy.asarray(logits), cupy.asarray(labels), reduction=reduction,
                                           out_grad=grad_out)
    assert grad is grad_out and loss.shape == () and loss.dtype == cupy.float32
    ref_loss, ref_grad = reference.softmax_cross_entropy(logits, labels, reduction=reduction)
    grad_scale = 1.0 / rows if reduction == "mean" else 1.0
    assert_close(grad, ref_grad, atol=1e-6 * grad_scale, rtol=1e-5, name=f"grad {rows}x{classes}")
    # Each row's loss carries about eps * (|max| + log C) of rounding; the rows add in float32.
    row_error = 4e-7 * (scale * 6 + np.log(classes) + 1)
    assert_close(loss, ref_loss, atol=(row_error * rows + reduction_atol(rows, 10.0)) * grad_scale, rtol=1e-6,
                 name=f"loss {rows}x{classes}")


@gpu
@pytest.mark.parametrize("rows,classes", [
    pytest.param(r, c, marks=ce_case_marks(r, c)) for r in CE_ROWS for c in CE_CLASSES])
def test_cross_entropy_against_reference(rng, rows, classes):
    check_cross_entropy(rng, rows, classes)


@gpu
@pytest.mark.parametrize("label_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("classes", [3, 33, 129, 1025, 4097])
def test_cross_entropy_label_types_reductions_and_row_widths(rng, label_dtype, reduction, classes):
    check_cross_entropy(rng, 37, classes, label_dtype, reduction)


@gpu
def test_cross_entropy_extreme_and_special_logits():
    logits = cupy.asarray(np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, -1e4],
                                    [-np.inf, 0.0, 1.0], [np.nan, 0.0, 1.0]], np.float32))
    labels = cupy.asarray(np.array([1, 2, 0, 2, 1]))
    loss, grad = ops.softmax_cross_entropy(logits[:4], labels[:4])
    ref_loss, ref_grad = reference.softmax_cross_entropy(logits[:4].get(), labels[:4].get())
    assert np.isfinite(float(loss)) and bool(cupy.isfinite(grad).all())
    assert_close(loss, ref_loss, atol=1e-2, rtol=1e-6)
    assert_close(grad, ref_grad, atol=1e-6)
    loss, grad = ops.softmax_cross_entropy(logits, labels)  # a NaN logit poisons its row and the loss
    assert np.isnan(float(loss))
    assert bool(cupy.isnan(grad[4]).all()) and bool(cupy.isfinite(grad[:4]).all())


@gpu
def test_invalid_labels_raise_or_poison(rng):
    logits = cupy.asarray(randn(rng, 6, 5))
    labels = cupy.asarray(np.array([0, 5, 2, -1, 4, 3], np.int32))
    with pytest.raises(ValueError, match=r"labels: 2 label\(s\) outside \[0, 5\)"):
        ops.softmax_cross_entropy(logits, labels)
    loss, grad = ops.softmax_cross_entropy(logits, labels, validate=False)
    assert np.isnan(float(loss))
    rows_nan = cupy.isnan(grad).all(axis=1).get()
    np.testing.assert_array_equal(rows_nan, [False, True, False, True, False, False])
    # The library stays usable: the next call with valid labels is right.
    good = cupy.asarray(np.array([0, 1, 2, 3, 4, 0], np.int32))
    assert_close(ops.softmax_cross_entropy(logits, good)[0],
                 reference.softmax_cross_entropy(logits.get(), good.get())[0], atol=1e-6)


@gpu
@pytest.mark.parametrize("classes", [1, 2, 10, 31, 1000, 2047, 32768, 40000])
def test_softmax_and_log_softmax(rng, classes):
    logits = randn(rng, 19, classes, scale=4.0)
    out = ops.softmax(cupy.asarray(logits), out=cupy.full((19, classes), cupy.nan, cupy.float32))
    assert_close(out, reference.softmax(logits), atol=1e-7, rtol=1e-5)
    out = ops.log_softmax(cupy.asarray(logits), out=cupy.full((19, classes), cupy.nan, cupy.float32))
    assert_close(out, reference.log_softmax(logits), atol=4e-6, rtol=1e-6)
    x = cupy.asarray(logits)
    assert ops.softmax(x, out=x) is x  # in place
    assert_close(x, reference.softmax(logits), atol=1e-7, rtol=1e-5)


@gpu
@pytest.mark.parametrize("shape,dim", [((19, 1), 1), ((7, 10), 1), ((33, 31), -1), ((6, 1000), 1), ((3, 40000), 1),
                                       ((4, 10, 3, 5), 1), ((5, 7, 9), 0), ((0, 4), 1)])
def test_softmax_backward(rng, shape, dim):
    x, dy = randn(rng, *shape, scale=3.0), randn(rng, *shape)
    for forward, backward, twin in ((reference.softmax, ops.softmax_backward, reference.softmax_backward),
                                    (reference.log_softmax, ops.log_softmax_backward,
                                     reference.log_softmax_backward)):
        y = forward(x, dim)
        out = backward(cupy.asarray(dy), cupy.asarray(y), dim, out=cupy.full(shape, cupy.nan, cupy.float32))
        assert_close(out, twin(dy, y, dim), atol=reduction_atol(shape[dim] if shape[0] else 1, 3.0), rtol=1e-5)


@gpu
@pytest.mark.parametrize("shape,dim", [((4, 1), 0), ((3, 5, 1, 1), 1), ((2, 6, 3), 1)])
def test_softmax_along_another_axis_leaves_its_input_alone(rng, shape, dim):
    """Another axis than the last: the input is read, never written (when moving the axis last
    needs no copy, the kernel runs on the array itself, writing only the output)."""
    x, dy = randn(rng, *shape, scale=3.0), randn(rng, *shape)
    x_gpu, dy_gpu = cupy.asarray(x), cupy.asarray(dy)
    for forward in (ops.softmax, ops.log_softmax):
        assert_close(forward(x_gpu, dim), getattr(reference, forward.__name__)(x, dim), atol=4e-6, rtol=1e-5)
    y = reference.softmax(x, dim)
    y_gpu = cupy.asarray(y)
    assert_close(ops.softmax_backward(dy_gpu, y_gpu, dim), reference.softmax_backward(dy, y, dim), atol=1e-5,
                 rtol=1e-5)
    np.testing.assert_array_equal(x_gpu.get(), x)
    np.testing.assert_array_equal(dy_gpu.get(), dy)
    np.testing.assert_array_equal(y_gpu.get(), y)


@gpu
def test_softmax_backward_checks_its_arguments():
    a = cupy.zeros((3, 4), cupy.float32)
    with pytest.raises(ValueError, match="y"):
        ops.softmax_backward(a, cupy.zeros((3, 5), cupy.float32))
    with pytest.raises(TypeError, match="dy"):
        ops.log_softmax_backward(a.astype(cupy.float64), a)
    with pytest.raises(ValueError, match="dim"):
        ops.softmax_backward(a, a, 2)


@gpu
@pytest.mark.parametrize("rows,classes", [(1, 1), (7, 10), (1000, 10), (129, 1000), (5, 40000)])
def test_accuracy(rng, rows, classes):
    logits = randn(rng, rows, classes)
    logits[::3, 0] = np.nan  # NaN counts as -inf (a 1-class row of NaN predicts class 0)
    labels = labels_for(rng, rows, classes)
    labels[::2] = np.argmax(np.where(np.isnan(logits), -np.inf, logits), axis=1)[::2]  # some hits
    got = ops.accuracy(cupy.asarray(logits), cupy.asarray(labels))
    assert got.dtype == cupy.int64 and int(got) == int(reference.accuracy(logits, labels))


@gpu
def test_accuracy_ties_pick_the_first_maximum():
    logits = np.array([[1.0, 3.0, 3.0], [0.0] * 3, [-np.inf] * 3, [np.nan] * 3, [np.nan, -1.0, -1.0]], np.float32)
    labels = np.array([1, 0, 0, 0, 1], np.int32)
    assert int(ops.accuracy(cupy.asarray(logits), cupy.asarray(labels))) == 5
    assert int(reference.accuracy(logits, labels)) == 5


@gpu
@pytest.mark.parametrize("size", [1, 3, 4, 5, 1000, (1 << 20) + 3,
                                  pytest.param(10**8, marks=pytest.mark.slow)])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mse_against_reference(rng, size, reduction):
    pred, target = randn(rng, size), randn(rng, size)
    grad_out = cupy.full(size, cupy.nan, cupy.float32)
    loss, grad = ops.mse_loss(cupy.asarray(pred), cupy.asarray(target), reduction=reduction, out_grad=grad_out)
    assert grad is grad_out
    ref_loss, ref_grad = reference.mse_loss(pred, target, reduction=reduction)
    scale = 1.0 / size if reduction == "mean" else 1.0
    assert_close(grad, ref_grad, atol=0, rtol=1e-6)
    assert_close(loss, ref_loss, atol=reduction_atol(size, scale=2.0, factor=1.0) * scale, rtol=1e-6)


@gpu
def test_mse_misaligned_and_multidimensional(rng):
    pred, target = randn(rng, 3, 5, 7), randn(rng, 3, 5, 7)
    base = cupy.empty(pred.size + 1, cupy.float32)[1:]
    base[...] = cupy.asarray(pred).ravel()
    loss, grad = ops.mse_loss(base.reshape(pred.shape), cupy.asarray(target))
    assert_close(loss, reference.mse_loss(pred, target)[0], atol=1e-6)
    assert_close(grad, reference.mse_loss(pred, target)[1], atol=0, rtol=1e-6)


@gpu
def test_losses_are_bitwise_deterministic(rng):
    logits, labels = cupy.asarray(randn(rng, 4096, 100)), cupy.asarray(labels_for(rng, 4096, 100))
    pred, target = cupy.asarray(randn(rng, 1 << 20)), cupy.asarray(randn(rng, 1 << 20))
    first = [float(ops.softmax_cross_entropy(logits, labels)[0]), float(ops.mse_loss(pred, target)[0])]
    for _ in range(3):
        assert [float(ops.softmax_cross_entropy(logits, labels)[0]), float(ops.mse_loss(pred, target)[0])] == first


@gpu
def test_empty_batches(rng):
    loss, grad = ops.softmax_cross_entropy(cupy.empty((0, 10), cupy.float32), cupy.empty(0, cupy.int64))
    assert np.isnan(float(loss)) and grad.shape == (0, 10)
    loss, grad = ops.mse_loss(cupy.empty(0, cupy.float32), cupy.empty(0, cupy.float32), reduction="sum")
    assert float(loss) == 0.0 and grad.shape == (0,)
    assert int(ops.accuracy(cupy.empty((0, 3), cupy.float32), cupy.empty(0, cupy.int32))) == 0


@gpu
def test_against_pytorch(rng):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch has no CUDA")
    import torch.nn.functional as F

    logits = torch.from_numpy(randn(rng, 300, 17, scale=3.0)).cuda().requires_grad_()
    labels = torch.from_numpy(labels_for(rng, 300, 17)).cuda()
    expected = F.cross_entropy(logits, labels)
    expected.backward()
    loss, grad = ops.softmax_cross_entropy(logits.detach(), labels)
    assert_close(loss, expected.item(), atol=1e-6, rtol=1e-5)
    assert_close(grad, logits.grad.cpu().numpy(), atol=1e-8, rtol=1e-5)
    pred = torch.from_numpy(randn(rng, 1001)).cuda().requires_grad_()
    target = torch.from_numpy(randn(rng, 1001)).cuda()
    expected = F.mse_loss(pred, target)
    expected.backward()
    loss, grad = ops.mse_loss(pred.detach(), target)
    assert_close(loss, expected.item(), atol=1e-6, rtol=1e-5)
    assert_close(grad, pred.grad.cpu().numpy(), atol=1e-8, rtol=1e-5)


# The few-classes path (C <= 32: a row per thread, 256 rows a block, the last block sums the
# blocks' sums): both sides of each register bucket (8, 16, 32) and of a block (256 rows),
# misaligned logits (no 16-byte copies), invalid labels in several blocks, repeatability.
@gpu
@pytest.mark.parametrize("classes", [1, 8, 9, 16, 17, 31, 32, 33])
@pytest.mark.parametrize("rows", [1, 255, 256, 257, 5000])
def test_cross_entropy_few_classes_blocks_and_buckets(rng, rows, classes):
    check_cross_entropy(rng, rows, classes, np.int32 if rows % 2 else np.int64)


@gpu
def test_cross_entropy_few_classes_misaligned_invalid_and_repeatable(rng):
    rows, classes = 1000, 10
    logits = randn(rng, rows, classes, scale=3.0)
    buffer = cupy.empty(rows * classes + 1, cupy.float32)
    shifted = buffer[1:].reshape(rows, classes)  # contiguous, 4 bytes off a 16-byte boundary
    shifted[...] = cupy.asarray(logits)
    labels = labels_for(rng, rows, classes, np.int64)
    grad_buffer = cupy.full(rows * classes + 1, cupy.nan, cupy.float32)
    loss, grad = ops.softmax_cross_entropy(shifted, cupy.asarray(labels), out_grad=grad_buffer[1:].reshape(rows,
                                                                                                           classes))
    ref_loss, ref_grad = reference.softmax_cross_entropy(logits, labels)
    assert_close(grad, ref_grad, atol=1e-9, rtol=1e-5)
    assert_close(loss, ref_loss, atol=1e-5, rtol=1e-6)
    runs = [ops.softmax_cross_entropy(shifted, cupy.asarray(labels)) for _ in range(3)]
    for other in runs[1:]:
        assert float(other[0]) == float(runs[0][0]) and bool((other[1] == runs[0][1]).all())
    bad = labels.copy()
    bad[[3, 300, 999]] = [10, -1, 12]  # three blocks
    with pytest.raises(ValueError, match=r"labels: 3 label\(s\) outside \[0, 10\)"):
        ops.softmax_cross_entropy(shifted, cupy.asarray(bad))
    loss, grad = ops.softmax_cross_entropy(shifted, cupy.asarray(bad), validate=False)
    assert np.isnan(float(loss)) and bool(cupy.isnan(grad[[3, 300, 999]]).all())
    assert bool(cupy.isfinite(grad[[0, 301, 998]]).all())
    # The ticket counter is reset: the next call is right again.
    assert_close(ops.softmax_cross_entropy(shifted, cupy.asarray(labels))[0], ref_loss, atol=1e-5, rtol=1e-6)


# Rows of a multiple of 4 classes take 16-byte loads and stores (warp rows up to 1024 classes,
# block rows up to 16384); a misaligned start falls back to 4-byte accesses.
@gpu
@pytest.mark.parametrize("classes", [36, 128, 1000, 2048, 4096, 16384])
def test_cross_entropy_and_softmax_with_16_byte_rows(rng, classes):
    check_cross_entropy(rng, 37, classes)
    logits = randn(rng, 5, classes, scale=4.0)
    buffer = cupy.empty(5 * classes + 1, cupy.float32)
    shifted = buffer[1:].reshape(5, classes)  # 4 bytes off a 16-byte boundary
    shifted[...] = cupy.asarray(logits)
    assert_close(ops.softmax(shifted), reference.softmax(logits), atol=1e-7, rtol=1e-5)
    assert_close(ops.softmax(cupy.asarray(logits)), reference.softmax(logits), atol=1e-7, rtol=1e-5)
