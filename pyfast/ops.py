"""GPU ops: check arguments, allocate outputs with CuPy, launch pyfast._C on CuPy's
current device and stream. What an array argument is and the checks every op shares (dtype,
contiguity, device, ``out=``) live in pyfast._arrays; here, per op family, the op's own
checks, the kernel version it runs and the launch.

Conventions (see ARCHITECTURE.md):
- Inputs are float32, C-contiguous CuPy arrays or CUDA arrays exposing DLPack /
  ``__cuda_array_interface__`` (PyTorch CUDA tensors, Numba arrays); outputs are CuPy arrays.
  A NumPy array is a TypeError (move it with ``cupy.asarray``); a wrong dtype is a TypeError;
  a wrong shape or a non-contiguous array is a ValueError naming the argument.
- ``out=`` takes a CuPy array of the result's shape to write into (no allocation).
- Ops never synchronize the device. Zero-size results are returned without a launch.
- PyTorch tensors are taken through DLPack with CuPy's current stream, so PyTorch's pending
  work is ordered before ours by an event on the device, not by a host wait.
"""

import numpy as np

from pyfast import _checks, _groups, _tuning
from pyfast._arrays import checked_input, empty, launch_args, on_gpu, operand, output, ptr, untransposed
from pyfast._checks import (  # noqa: F401  (public)
    CONV2D_PASSES,
    CONV2D_VERSIONS,
    DEFAULT_CONV2D_VERSION,
    DEFAULT_MATMUL_VERSION,
    MATMUL_PRECISIONS,
    MATMUL_VERSIONS,
    TENSOR_CORE_VERSION,
)
from pyfast._device import device_name as _device_name, is_available, require_gpu, sm_count as _sm_count

try:
    import cupy
except ImportError:  # reported by require_gpu()
    cupy = None
try:
    from pyfast import _C
except ImportError:  # not built: reported by require_gpu()
    _C = None


# ------------------------------------------------------------------------------- matmul
def matmul(a, b, *, trans_a=False, trans_b=False, bias=None, activation=None, out=None, version=None,
           precision=None, plan=None):
    """C = op(a) @ op(b) (+ bias on every row) (then ReLU if activation="relu"), fused.

    op(x) is x, or x.T when trans_x: the stored matrix is read transposed, never copied, so
    the gradients of ``y = x @ w`` are ``matmul(dy, w, trans_b=True)`` and
    ``matmul(x, dy, trans_a=True)``. ``a`` and ``b`` may also be transposed views (F-contiguous,
    as ``x.T`` of a C-contiguous x): ``matmul(x.T, dy)`` reads x transposed the same way, as
    cuBLAS users expect; other strided views are a ValueError. ``bias`` has N elements. K = 0
    gives bias (or zeros).
    C is float32 and sums are float32 in every mode; summation order differs between versions.

    ``precision``: "fp32" (default) multiplies float32 operands exactly on the CUDA cores with
    ``version`` one of ``MATMUL_VERSIONS`` (default ``DEFAULT_MATMUL_VERSION``; "simple" is one
    thread per output, the on-GPU oracle; "tiled" is shared-memory tiled and register-blocked).
    "tf32" and "bf16" are opt-in tensor-core modes (version ``TENSOR_CORE_VERSION``, sm_80+):
    operands are rounded to TF32 (10-bit mantissa) or BF16 (7-bit) before they are multiplied,
    like PyTorch with ``allow_tf32`` / bfloat16 inputs; expect relative errors near 1e-3 / 1e-2
    of the result's scale. "bf16" also takes bfloat16 ``a`` and ``b`` (CuPy arrays with
    ml_dtypes' bfloat16, PyTorch bfloat16 tensors through DLPack).

    ``plan``: None lets pyfast choose the tile configuration and K splits (from the measured
    table in ``pyfast/matmul_tuning.json``, else by shape: K is split when the tiles would
    leave SMs idle and K >= 1024, as nn.Linear's small batches do); benchmarks and the tuner pass
    ``(config, splits)`` to force one. Split K sums its slices in a fixed order, so results
    repeat bit for bit.
    """
    a_op, b_op = (checked_input(name, x, check_dtype=False, transposed_ok=True) for name, x in (("a", a), ("b", b)))
    bias_op = checked_input("bias", bias, optional=True)
    version_code, precision_code, bf16_storage = _checks.matmul_kernel(version, precision, a_op.dtype, b_op.dtype)
    m, n, k = _checks.matmul_dims(a_op.shape, b_op.shape, trans_a, trans_b)
    if bias_op is not None:
        _checks.expect_shape("bias", bias_op.shape, (n,))
    activation_code = _checks.activation_code(activation)
    config, splits = _checks.matmul_plan(plan)
    require_gpu("matmul")
    configs = _C.matmul_config_count(version_code)
    if config >= configs:
        raise ValueError(f"plan: config {config} does not exist for this version ({configs} configurations)")
    # Transposed views (F-contiguous) are read as the C-contiguous matrix under them, transposed.
    a, trans_a = untransposed(on_gpu(a_op), a_op, trans_a)
    b, trans_b = untransposed(on_gpu(b_op), b_op, trans_b)
    bias = on_gpu(bias_op) if bias_op is not None else None
    out = output(out, (m, n), {"a": a, "b": b, "bias": bias})
    if out.size == 0:
        return out
    device, stream = launch_args()
    if plan is None:
        measured = _tuning.lookup(_device_name(device), version_code, precision_code, bool(trans_a), bool(trans_b),
                                  m, n, k)
        if measured is not None:
            config, splits = measured
        else:  # no measured plan: split K by rule when the tiles leave SMs idle (nn.Linear's small batches)
            splits = _C.matmul_rule_splits(version_code, m, n, k, _sm_count(device))
    if version_code == 0:  # simple has no split path
        splits = 1
    # Split K's partial products live in scratch from CuPy's pool (stream-ordered).
    workspace_bytes = _C.matmul_workspace_size(m, n, k, splits)
    workspace = empty(workspace_bytes // 4, cupy.float32) if workspace_bytes else None
    _C.matmul(ptr(a), ptr(b), ptr(bias), ptr(out), m, n, k, bool(trans_a), bool(trans_b), activation_code,
              version_code, precision_code, int(bf16_storage), config, splits, ptr(workspace), device, stream)
    return out


# ------------------------------------------------------------------------------- data
def gather_batch(x, index, shifts=None, *, out=None):
    """out[b] = x[index[b]], each image shifted by shifts[b] = (rows, columns) with zeros
    filling in (the last two axes; ``shifts``: int32 (B, 2) or None), in one pass: a training
    batch from a data set kept on the GPU. ``index``: int64 (B,); an index outside [0, N)
    gives zeros (checking it would need the host)."""
    x_op, index_op = checked_input("x", x), checked_input("index", index, check_dtype=False)
    shifts_op = checked_input("shifts", shifts, optional=True, check_dtype=False)
    rows, batch, planes, h, w = _checks.gather_batch_dims(
        x_op.shape, index_op.shape, index_op.dtype, None if shifts_op is None else shifts_op.shape,
        None if shifts_op is None else shifts_op.dtype)
    require_gpu("gather_batch")
    x, index = on_gpu(x_op), on_gpu(index_op)
    shifts = on_gpu(shifts_op) if shifts_op is not None else None
    out = output(out, (batch, *x.shape[1:]), {"x": x})
    if out.size:
        _C.gather_batch(ptr(x), ptr(index), ptr(shifts), ptr(out), rows, batch, planes, h, w,
                        *launch_args())
    return out


# ------------------------------------------------------------------------ element-wise
def relu(input, inplace=False, *, out=None):
    """max(input, 0) element-wise; NaN propagates (as torch.nn.functional.relu).
    ``inplace=True`` writes into ``input``; ``out`` may also be ``input``."""
    x_op = checked_input("input", input)
    out = _checks.relu_target(inplace, out, input)
    require_gpu("relu")
    x = on_gpu(x_op)
    out = output(out, x.shape, {"input": x}, in_place_ok=("input",))
    if out.size:
        _C.relu(ptr(x), ptr(out), out.size, *launch_args())
    return out


def relu_backward(dy, y, *, out=None):
    """Gradient of ReLU given its output ``y``: dy where y > 0, else 0 (torch's rule).
    ``out`` may be ``dy`` (in place)."""
    dy_op, y_op = checked_input("dy", dy), checked_input("y", y)
    _checks.expect_shape("y", y_op.shape, dy_op.shape)
    require_gpu("relu_backward")
    dy, y = on_gpu(dy_op), on_gpu(y_op)
    out = output(out, dy.shape, {"dy": dy, "y": y}, in_place_ok=("dy",))
    if out.size:
        _C.relu_backward(ptr(dy), ptr(y), ptr(out), out.size, *launch_args())
    return out


def add_bias(x, bias, *, out=None):
    """x + bias broadcast along axis 1: (N, C) + (C,), or (N, C, H, W) + (C,) per channel.
    ``out`` may be ``x`` (in place)."""
    x_op, bias_op = checked_input("x", x), checked_input("bias", bias)
    outer, channels, inner = _checks.channel_view("x", x_op.shape)
    _checks.expect_shape("bias", bias_op.shape, (channels,))
    require_gpu("add_bias")
    x, bias = on_gpu(x_op), on_gpu(bias_op)
    out = output(out, x.shape, {"x": x, "bias": bias}, in_place_ok=("x",))
    if out.size:
        _C.add_bias(ptr(x), ptr(bias), ptr(out), outer, channels, inner, *launch_args())
    return out


def bias_grad(dy, *, out=None):
    """Gradient of add_bias for its bias: dy summed over every axis but 1 -> shape (C,).
    Deterministic (fixed summation order); an empty batch gives zeros."""
    dy_op = checked_input("dy", dy)
    outer, channels, inner = _checks.channel_view("dy", dy_op.shape)
    require_gpu("bias_grad")
    dy = on_gpu(dy_op)
    out = output(out, (channels,), {"dy": dy})
    if out.size:
        device, stream = launch_args()
        # Scratch for the per-slice partial sums (from CuPy's pool, stream-ordered).
        workspace_size = _C.bias_grad_workspace_size(outer, channels, inner, device)
        workspace = empty(workspace_size, cupy.float32) if workspace_size else None
        _C.bias_grad(ptr(dy), ptr(out), ptr(workspace), outer, channels, inner, device, stream)
    return out


# ------------------------------------------------------------------------------ losses
def _labels(labels, name="labels"):
    """The checked metadata of a labels argument (int32 or int64, contiguous)."""
    op = operand(name, labels)
    _checks.expect_labels(name, op.dtype)
    if not op.contiguous:
        raise _checks.not_contiguous(name, op.shape, "cupy")
    return op


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None, *, out_grad=None):
    """(loss, grad) of the mean (or sum) squared error, from one pass over the data:
    loss = mean((input - target)^2) as a 0-d CuPy float32 array (not synchronized: read it with
    float(loss) when needed), grad = dloss/dinput (into ``out_grad`` when given). The loss sum
    has a fixed order: bitwise the same on every run and every GPU. The arguments are
    torch.nn.functional.mse_loss's (``size_average`` / ``reduce``, deprecated there, and
    ``weight`` must stay None); unlike it, the gradient comes back too. ``reduction="none"``:
    the loss is (input - target)^2 per element and grad the gradient of their sum, same pass."""
    pred_op, target_op = checked_input("input", input), checked_input("target", target)
    _checks.expect_shape("target", target_op.shape, pred_op.shape)
    _checks.legacy_reduction(size_average, reduce)
    _checks.no_loss_weight(weight)
    loss_scale, grad_scale, per_element = _checks.mse_reduction(reduction, pred_op.size)
    require_gpu("mse_loss")
    pred, target = on_gpu(pred_op), on_gpu(target_op)
    grad = output(out_grad, pred.shape, {"input": pred, "target": target}, name="out_grad")
    squares = empty(pred.shape, cupy.float32) if per_element else None
    loss = squares if per_element else empty((), cupy.float32)
    device, stream = launch_args()
    workspace = empty(_C.mse_loss_workspace_size(pred.size), cupy.float32)
    _C.mse_loss(ptr(pred), ptr(target), ptr(grad), 0 if per_element else ptr(loss), ptr(workspace), pred.size,
                loss_scale, grad_scale, device, stream, ptr(squares))
    return loss, grad


def softmax_cross_entropy(logits, labels, *, reduction="mean", out_grad=None, validate=True):
    """(loss, grad) of softmax cross-entropy over (N, C) float32 logits and (N,) int32/int64
    class indices, fused: one read of the logits, the gradient (softmax - onehot) / N written
    in the same pass, probabilities never stored. Numerically stable (max-subtracted
    log-sum-exp). The loss is a 0-d CuPy float32 array, summed over rows in a fixed order.

    With at most 32 classes a thread takes a row (rows staged through shared memory), and the
    per-block sums are added in block order by the last block, all in one launch.

    Labels outside [0, C) are detected on the GPU. ``validate=True`` (the default) then reads
    their count back to the host after the launch, a synchronization, and raises ValueError.
    ``validate=False`` skips that read (for training loops, e.g. after the first batch): the
    op then never synchronizes, and rows with an invalid label get a NaN loss and NaN
    gradient, so the loss itself shows the problem.
    """
    logits_op, labels_op = checked_input("logits", logits), _labels(labels)
    rows, classes = _checks.classifier_dims(logits_op.shape, labels_op.shape)
    _checks.expect_bool("validate", validate)
    loss_scale, grad_scale = _checks.reduction_scales(reduction, rows)
    require_gpu("softmax_cross_entropy")
    logits, labels = on_gpu(logits_op), on_gpu(labels_op)
    grad = output(out_grad, logits.shape, {"logits": logits, "labels": labels}, name="out_grad")
    loss = empty((), cupy.float32)
    invalid = empty((), cupy.int64)
    row_loss = empty(_C.softmax_cross_entropy_workspace_size(rows, classes), cupy.float32)  # scratch
    _C.softmax_cross_entropy(ptr(logits), ptr(labels), labels.dtype == cupy.int64, ptr(grad), ptr(loss),
                             ptr(invalid), ptr(row_loss), rows, classes, loss_scale, grad_scale,
                             *launch_args())
    if validate:
        count = int(invalid.get())
        if count:
            raise _checks.invalid_labels_error(count, classes)
    return loss, grad


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean",
                  label_smoothing=0.0, *, out_grad=None, validate=True):
    """(loss, grad) of torch.nn.functional.cross_entropy (same arguments, same order) over
    (N, C) or (N, C, d1, ...) logits: ``target`` (N, d1, ...) int32 / int64 class indices
    (positions whose label is ``ignore_index`` count nowhere) or float32 probabilities of the
    input's shape; ``weight`` (C,) per class; ``label_smoothing``; ``reduction`` "mean" (by the
    weights of the positions not ignored, as PyTorch), "sum" or "none" (then ``loss`` is the
    (N, d1, ...) losses and ``grad`` the gradient of their sum). The loss is a CuPy float32
    array, summed in a fixed order.

    Three launches: the labels' prepass (the mean's divisor), a warp per row (its logits read
    twice, the second time mostly from L1), the ordered sum. ``softmax_cross_entropy`` is the
    single-launch kernel for the plain case (labels all in [0, C), no options). Invalid labels
    are found on the GPU; ``validate=True`` reads their count (a synchronization) and raises."""
    x_op, target_op = checked_input("input", input), operand("target", target)
    weight_op = checked_input("weight", weight, optional=True)
    _checks.legacy_reduction(size_average, reduce)
    ignore_index, reduction_code, smoothing = _checks.cross_entropy_options(ignore_index, reduction, label_smoothing)
    rows, classes, inner, probabilities, loss_shape = _checks.cross_entropy_dims(
        x_op.shape, target_op.shape, target_op.dtype, None if weight_op is None else weight_op.shape)
    target_op = checked_input("target", target) if probabilities else _labels(target, "target")
    _checks.expect_bool("validate", validate)
    require_gpu("cross_entropy")
    logits, target = on_gpu(x_op), on_gpu(target_op)
    weight = on_gpu(weight_op) if weight_op is not None else None
    grad = output(out_grad, logits.shape, {"input": logits, "target": target, "weight": weight}, name="out_grad")
    row_loss = empty(loss_shape, cupy.float32)
    loss = row_loss if reduction_code == 2 else empty((), cupy.float32)
    invalid = empty((), cupy.int64)
    scales = empty((2,), cupy.float32)
    labels, probs = (None, target) if probabilities else (target, None)
    _C.cross_entropy(ptr(logits), ptr(labels), (not probabilities) and target.dtype == cupy.int64, ptr(probs),
                     ptr(weight), ptr(grad), ptr(row_loss), 0 if reduction_code == 2 else ptr(loss), ptr(invalid),
                     ptr(scales), ignore_index, smoothing, reduction_code, rows, classes, inner, *launch_args())
    if validate and not probabilities:
        count = int(invalid.get())
        if count:
            raise _checks.invalid_targets_error(count, classes, ignore_index)
    return loss, grad


def _along_rows(axis, out, inputs, launch):
    """Runs a row kernel, ``launch(*input pointers, out pointer, rows, classes)``, along ``axis``
    of ``out``'s shape (the inputs have it too): on the arrays themselves when that axis is
    contiguous in memory (the last one, or one with only size-1 axes after it); else on copies
    with the axis moved last, the result moved back into ``out`` (two copies)."""
    classes = out.shape[axis]
    rows = out.size // classes
    moved_out = cupy.moveaxis(out, axis, -1)
    if moved_out.flags.c_contiguous:  # then so are the inputs' (C-contiguous, of the same shape)
        launch(*(ptr(a) for a in inputs), ptr(out), rows, classes)
        return out
    moved = [cupy.ascontiguousarray(cupy.moveaxis(a, axis, -1)) for a in inputs]
    result = empty(moved[0].shape, cupy.float32)
    launch(*(ptr(a) for a in moved), ptr(result), rows, classes)
    out[...] = cupy.moveaxis(result, -1, axis)
    return out


def _softmax(name, logits, dim, dtype, out, log):
    logits_op = checked_input("input", logits)
    shape = tuple(logits_op.shape)
    axis = _checks.softmax_dim(dim, len(shape))
    _checks.softmax_dtype(dtype)
    require_gpu(name)
    logits = on_gpu(logits_op)
    out = output(out, shape, {"input": logits}, in_place_ok=("input",))
    if out.size == 0:
        return out  # an empty class axis, or no rows: nothing to normalize (PyTorch's empty result)
    return _along_rows(axis, out, [logits], lambda x, y, rows, classes: _C.softmax(x, y, rows, classes, log,
                                                                                  *launch_args()))


def softmax(input, dim=None, dtype=None, *, out=None):
    """Softmax along ``dim`` (max-subtracted), as torch.nn.functional.softmax: any rank, ``dim``
    None for PyTorch's implicit axis (0 for 1-D and 3-D input, else 1); ``dtype`` None or
    float32. The last axis runs in place on contiguous rows; another axis is moved last and
    back (two copies). ``out`` may be ``input``."""
    return _softmax("softmax", input, dim, dtype, out, False)


def log_softmax(input, dim=None, dtype=None, *, out=None):
    """log(softmax): x - max - log(sum(exp(x - max))) along ``dim``, as
    torch.nn.functional.log_softmax. ``out`` may be ``input``."""
    return _softmax("log_softmax", input, dim, dtype, out, True)


def _softmax_backward(name, dy, y, dim, out, log):
    dy_op, y_op = checked_input("dy", dy), checked_input("y", y)
    _checks.expect_shape("y", y_op.shape, dy_op.shape)
    shape = tuple(dy_op.shape)
    axis = _checks.softmax_dim(dim, len(shape))
    require_gpu(name)
    dy, y = on_gpu(dy_op), on_gpu(y_op)
    out = output(out, shape, {"dy": dy, "y": y})
    if out.size == 0:
        return out
    return _along_rows(axis, out, [dy, y], lambda dy_ptr, y_ptr, dx_ptr, rows, classes: _C.softmax_backward(
        dy_ptr, y_ptr, dx_ptr, rows, classes, log, *launch_args()))


def softmax_backward(dy, y, dim=None, *, out=None):
    """dL/dinput of ``softmax(input, dim)`` from ``dy`` and the forward's output ``y``:
    y * (dy - sum(dy * y)) along ``dim`` (None: the forward's implicit axis), a warp per row.
    ``out`` must not overlap ``dy`` or ``y``."""
    return _softmax_backward("softmax_backward", dy, y, dim, out, False)


def log_softmax_backward(dy, y, dim=None, *, out=None):
    """dL/dinput of ``log_softmax(input, dim)`` from ``dy`` and the forward's output ``y``:
    dy - exp(y) * sum(dy) along ``dim``."""
    return _softmax_backward("log_softmax_backward", dy, y, dim, out, True)


def accuracy(logits, labels):
    """Number of rows whose first maximal logit is at the label (NaN counting as -inf), as a
    0-d CuPy int64 array (not synchronized)."""
    logits_op, labels_op = checked_input("logits", logits), _labels(labels)
    rows, classes = _checks.classifier_dims(logits_op.shape, labels_op.shape)
    require_gpu("accuracy")
    logits, labels = on_gpu(logits_op), on_gpu(labels_op)
    correct = empty((), cupy.uint64)
    _C.accuracy(ptr(logits), ptr(labels), labels.dtype == cupy.int64, rows, classes, ptr(correct),
                *launch_args())
    return correct.view(cupy.int64)


# -------------------------------------------------------------------------- optimizers
_FLOAT32 = np.dtype(np.float32)


def _tensor_list(name, arrays, shapes, device):
    """A list of float32 tensors checked (shapes matching `shapes` when given): CuPy arrays,
    or Operand metadata for anything else (converted once the GPU is known to be usable).
    A CuPy array that passes every check takes a fast path: the training loop calls the
    optimizers every step, and their cost on small models is this Python loop."""
    checked = []
    for i, x in enumerate(arrays):
        if (device is not None and type(x) is cupy.ndarray and x.dtype == _FLOAT32 and x.flags.c_contiguous
                and (shapes is None or x.shape == shapes[i]) and x.data.device_id == device):
            checked.append(x)
            continue
        op = checked_input(f"{name}[{i}]", x)
        if shapes is not None:
            _checks.expect_shape(f"{name}[{i}]", op.shape, shapes[i])
        checked.append(op)
    return checked


def _no_overlaps(spans):
    """Every tensor of every list must be distinct memory (a parameter listed twice, or a
    gradient aliasing its parameter, would be updated from half-written values).
    spans: (start address, end address, argument name) of the non-empty tensors."""
    spans = sorted(spans)
    for (_, end, first), (start, _, second) in zip(spans, spans[1:]):
        if start < end:
            raise ValueError(f"{second}: overlaps {first}; each parameter, gradient and state needs its own memory")


def _optimizer_pointers(op_name, **lists):
    """Checks parallel lists of tensors (None: absent); returns {list name: [device address]}
    and the tensors' sizes."""
    _checks.param_lists(**lists)
    device = cupy.cuda.runtime.getDevice() if is_available() else None
    shapes = None
    checked = {}
    for name, arrays in lists.items():
        if arrays is None:
            continue
        checked[name] = _tensor_list(name, arrays, shapes, device)
        if shapes is None:
            shapes = [x.shape for x in checked[name]]
    require_gpu(op_name)
    addresses, spans = {}, []
    for name, arrays in checked.items():
        addresses[name] = []
        for i, x in enumerate(arrays):
            if not isinstance(x, cupy.ndarray):
                x = on_gpu(x)
            addresses[name].append(x.data.ptr)
            if x.size:
                spans.append((x.data.ptr, x.data.ptr + x.nbytes, f"{name}[{i}]"))
    _no_overlaps(spans)
    return addresses, [int(np.prod(shape, dtype=np.int64)) for shape in shapes or []]


def sgd_step(params, grads, *, lr, momentum=0.0, weight_decay=0.0, nesterov=False, velocity=None):
    """In-place SGD over a list of parameters in one launch per 48 tensors, as torch.optim.SGD
    with dampening 0. ``velocity``: momentum buffers (zeros before the first step, which then
    takes buf = grad as PyTorch does), needed when momentum > 0 and updated in place."""
    _checks.sgd_hyperparameters(lr, momentum, weight_decay, nesterov)
    if momentum and velocity is None:
        raise ValueError("velocity: momentum > 0 needs a list of buffers (zeros before the first step)")
    addresses, sizes = _optimizer_pointers("sgd_step", params=params, grads=grads,
                                           velocity=velocity if momentum else None)
    if sizes:
        _C.sgd_step(addresses["params"], addresses["grads"], addresses.get("velocity", []), sizes, lr, momentum,
                    weight_decay, nesterov, *launch_args())


def adam_step(params, grads, exp_avg, exp_avg_sq, *, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
              weight_decay=0.0, decoupled=True):
    """In-place Adam (``decoupled=False``) or AdamW (``decoupled=True``) over a list of
    parameters in one launch per 48 tensors, with PyTorch's bias correction and float32
    update order. ``exp_avg`` / ``exp_avg_sq`` start as zeros and are updated in place.

    ``step``: the 1-based count of this update (an int), or a 0-d int64 CuPy array holding the
    count of updates done so far, which this call increments on the device before using it
    (PyTorch's ``capturable=True``): nothing then changes between calls on the host side, so
    the update can be captured once in a CUDA graph and replayed."""
    device_step = isinstance(step, cupy.ndarray) if cupy is not None else False
    if device_step:
        if step.shape != () or step.dtype != np.int64:
            raise ValueError(f"step: a device step counter must be a 0-d int64 array, got {step.dtype} {step.shape}")
        beta1, beta2, step_size, bias_correction2_sqrt = _checks.adam_hyperparameters(
            1, lr, betas, eps, weight_decay, decoupled)
    else:
        beta1, beta2, step_size, bias_correction2_sqrt = _checks.adam_hyperparameters(
            step, lr, betas, eps, weight_decay, decoupled)
    addresses, sizes = _optimizer_pointers("adam_step", params=params, grads=grads, exp_avg=exp_avg,
                                           exp_avg_sq=exp_avg_sq)
    schedule = None
    if device_step:
        schedule = empty(2, cupy.float32)  # {step_size, sqrt(1 - beta2^step)} for this step
        _C.adam_schedule(step.data.ptr, float(lr), beta1, beta2, schedule.data.ptr, *launch_args())
    if sizes:
        _C.adam_step(addresses["params"], addresses["grads"], addresses["exp_avg"], addresses["exp_avg_sq"], sizes,
                     lr, beta1, beta2, eps, weight_decay, decoupled, step_size, bias_correction2_sqrt,
                     ptr(schedule), *launch_args())


# ------------------------------------------------------------------------ fused runs
def linear_mse_sgd_fit(x, y, weight, bias, *, lr, epochs, out_losses=None):
    """A whole full-batch linear-regression run in one launch: ``epochs`` steps of plain SGD
    on the mean squared error of ``x @ weight.T + bias`` against ``y``, the same float32 math
    as the layer-by-layer step (Linear, MSELoss, SGD). ``weight`` (O, F) and ``bias`` (O,) are
    CuPy arrays updated in place; returns the loss before each step (``epochs`` floats, into
    ``out_losses`` when given). For small problems: n * O + O * (F + 1) <= 12000 floats; one
    warp runs it when O = 1, F <= 8 and n <= 1024 (the tutorial), else one block."""
    x_op, y_op = checked_input("x", x), checked_input("y", y)
    w_op, b_op = checked_input("weight", weight), checked_input("bias", bias)
    n, f, o = _checks.linear_fit_dims(x_op.shape, y_op.shape, w_op.shape, b_op.shape, epochs, lr)
    require_gpu("linear_mse_sgd_fit")
    x, y = on_gpu(x_op), on_gpu(y_op)
    params = {}
    for name, array in (("weight", weight), ("bias", bias)):
        # Updated in place: must be a CuPy array, separate from the data and each other.
        params[name] = output(array, array.shape, {"x": x, "y": y, **params}, name=name)
    losses = output(out_losses, (epochs,), {"x": x, "y": y, **params}, name="out_losses")
    _C.linear_mse_sgd_fit(ptr(x), ptr(y), ptr(params["weight"]), ptr(params["bias"]), ptr(losses), n, f, o,
                          epochs, lr, *launch_args())
    return losses


# --------------------------------------------------------------- convolution and pooling
_conv_geometry = _checks.conv2d_geometry
_TILED = CONV2D_VERSIONS.index("tiled")
_GEMM_WORKSPACE_LIMIT = 2 ** 28  # floats (1 GiB): the rule does not pick "gemm" above this


def _conv_rule(g, pass_code):
    """The version when the card's table is silent, from the H100 measurements of 2026-11-26
    (benchmarks/results/nvidia-h100-80gb-hbm3-2026-11-26/measurement.md): "implicit" was the fastest forward and weight gradient of every
    measured layer and "gemm" the fastest input gradient (its im2col workspace permitting).
    "tiled" enters through the measured table (benchmarks/tune_conv.py) once a GPU run has
    checked and timed it."""
    gemm, implicit = CONV2D_VERSIONS.index("gemm"), CONV2D_VERSIONS.index("implicit")
    workspace = (g["c"] * g["r"] * g["s"] + g["k"]) * g["n"] * g["p"] * g["q"]
    if pass_code == 1 and workspace <= _GEMM_WORKSPACE_LIMIT and _checks.conv2d_fits(g, gemm):
        return gemm
    return implicit if _checks.conv2d_fits(g, implicit) else CONV2D_VERSIONS.index("direct")


def _conv_choice(g, pass_name, device):
    """version=None: the card's measured plan for the pass's class, else the rule."""
    pass_code = CONV2D_PASSES.index(pass_name)
    measured = _tuning.conv_lookup(_device_name(device), pass_code, g)
    if measured is not None and 0 <= measured[0] < len(CONV2D_VERSIONS):
        version_code, config = int(measured[0]), int(measured[1])
        if version_code != _TILED:
            if _checks.conv2d_fits(g, version_code):
                return version_code, -1
        elif 0 <= config < _checks.CONV2D_TILED_CONFIGS[pass_name] and \
                _checks.conv2d_fits(g, _TILED, pass_name, config):  # a class's entry may not launch on all of it
            return version_code, config
    return _conv_rule(g, pass_code), -1


def _conv_plan_on(g, pass_name, plan, device):
    return plan if plan[0] is not None else _conv_choice(g, pass_name, device)


def conv2d_plan(pass_name, x_shape, w_shape, *, stride=1, padding=0, dilation=1, version=None, config=None):
    """(version name, config) that a pass ("forward", "backward_input" or "backward_weight") of
    this convolution runs with on the current GPU: what ``version=None`` chooses (config -1:
    the version's default)."""
    if pass_name not in CONV2D_PASSES:
        raise ValueError(f"pass_name: expected one of {list(CONV2D_PASSES)}, got {pass_name!r}")
    g = _checks.conv2d_dims(_checks.image_shape("x_shape", x_shape), _checks.image_shape("w_shape", w_shape),
                            stride, padding, dilation)
    plan = _checks.conv2d_plan(g, pass_name, version, config)
    require_gpu("conv2d_plan")
    version_code, config_code = _conv_plan_on(g, pass_name, plan, cupy.cuda.runtime.getDevice())
    return CONV2D_VERSIONS[version_code], config_code


def _conv_workspace(g, version_code, pass_name, config):
    """Scratch memory for one pass (None when it needs none), from CuPy's pool."""
    size = _C.conv2d_workspace_size(_conv_geometry(g), version_code, CONV2D_PASSES.index(pass_name), config)
    return empty(size, cupy.float32) if size else None


def _conv_forward_operands(x, w, bias, stride, padding, dilation, groups):
    """((input, weight, bias) operands, geometry) of a forward convolution after their checks (no GPU)."""
    x_op, w_op = checked_input("input", x), checked_input("weight", w)
    bias_op = checked_input("bias", bias, optional=True)
    g = _checks.conv2d_dims(x_op.shape, w_op.shape, stride, padding, dilation, groups, names=("input", "weight"))
    if bias_op is not None:
        _checks.expect_shape("bias", bias_op.shape, (g["k"],))
    return (x_op, w_op, bias_op), g


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, activation=None, out=None,
           version=None, config=None):
    """2D cross-correlation of NCHW ``input`` with OIHW ``weight`` (+ ``bias`` per output
    channel), as torch.nn.functional.conv2d (same arguments, same order). ``stride``,
    ``padding``, ``dilation``: an int or an (h, w) pair; ``padding`` also "valid" (none) or
    "same" (stride 1; PyTorch's extra bottom / right row for an even dilated kernel); output
    size (H + 2 pad - dilation (R - 1) - 1) // stride + 1. An input smaller than the dilated
    kernel is a ValueError. ``groups``: one groups=1 convolution per group of channels, each
    group's input slice copied first (pyfast._groups; right for a few wide groups, slow for
    depthwise: no kernel of its own yet). pyfast's own options are keyword-only: ``activation="relu"``: max(y, 0)
    on the way out (NaN kept, as torch.relu; fused into the tiled kernel's epilogue, a second
    pass for the others).

    ``version``: None (default) chooses per pass and shape, from the card's measured table
    (``pyfast/conv_tuning.json``), else a rule from the latest measurements (``conv2d_plan``
    says which). Or one of ``CONV2D_VERSIONS``: "direct" (one thread per output, the on-GPU
    oracle), "gemm" (im2col into a workspace of (C*R*S + K) * N*P*Q floats from CuPy's pool,
    then the tiled matmul), "implicit" (the tiled matmul gathering its tiles straight from x and
    w), "tiled" (direct convolution through shared-memory tiles: stride 1, dilation 1, 3x3 or
    5x5). ``config``: one of the tiled version's configurations (benchmarks and the tuner)."""
    operands, g = _conv_forward_operands(input, weight, bias, stride, padding, dilation, groups)
    relu = _checks.conv2d_activation(activation)
    plan = _checks.conv2d_plan(_checks.conv2d_group_geometry(g), "forward", version, config)
    require_gpu("conv2d")
    x, w, bias = (on_gpu(op) if op is not None else None for op in operands)
    out = output(out, g["y_shape"], {"input": x, "weight": w, "bias": bias})
    if g["groups"] > 1:
        return _groups.forward(conv2d, cupy, x, w, bias, g["groups"], out, stride=stride, padding=padding,
                               dilation=dilation, activation=activation, version=version, config=config)
    device, stream = launch_args()
    version_code, config_code = _conv_plan_on(g, "forward", plan, device)
    if out.size:
        workspace = _conv_workspace(g, version_code, "forward", config_code)  # alive until the launch is queued
        _C.conv2d(ptr(x), ptr(w), ptr(bias), ptr(out), ptr(workspace), _conv_geometry(g), version_code,
                  config_code, relu, device, stream)
    return out


def conv2d_max_pool2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, activation=None,
                      out=None, out_indices=None, version=None, config=None):
    """(y, indices) = max_pool2d(conv2d(input, weight, bias, stride, padding, dilation, groups,
    activation=...), 2, return_indices=True): a convolution and the
    2x2 stride-2 max-pool of its output (the CNN's layer pairs). With the tiled version the
    output is pooled in registers and never written (configurations
    ``CONV2D_TILED_POOL_CONFIGS``); other versions write it to scratch memory and pool it in a
    second pass. ``indices`` are flat in the convolution's output plane, as max_pool2d's; the
    results are those of the two ops run one after the other, bit for bit."""
    operands, g = _conv_forward_operands(input, weight, bias, stride, padding, dilation, groups)
    relu = _checks.conv2d_activation(activation)
    if g["groups"] > 1:  # the grouped convolution, then the pooling: two passes
        _checks.conv2d_plan(_checks.conv2d_group_geometry(g), "forward", version, config)
        _checks.pool2d_dims(g["y_shape"], 2, 2, 0)
        conv_out = conv2d(input, weight, bias, stride, padding, dilation, groups, version=version, config=config)
        return max_pool2d(conv_out, 2, activation=activation, return_indices=True, out=out, out_indices=out_indices)
    pool, plan = _checks.conv2d_max_pool2d_plan(g, version, config)
    require_gpu("conv2d_max_pool2d")
    x, w, bias = (on_gpu(op) if op is not None else None for op in operands)
    y = output(out, pool["y_shape"], {"input": x, "weight": w, "bias": bias})
    indices = _indices_output(out_indices, pool["y_shape"])
    if y.size == 0:
        return y, indices
    device, stream = launch_args()
    version_code, config_code = _conv_plan_on(g, "forward", plan, device)
    if version_code == _TILED:
        if config_code not in _checks.CONV2D_TILED_POOL_CONFIGS:
            config_code = -1  # a measured forward plan that cannot pool: the same sums, another tile
        _C.conv2d_tiled_max_pool(ptr(x), ptr(w), ptr(bias), ptr(y), ptr(indices), _conv_geometry(g), relu,
                                 config_code, device, stream)
        return y, indices
    conv_out = empty(g["y_shape"], cupy.float32)
    workspace = _conv_workspace(g, version_code, "forward", config_code)  # alive until queued
    _C.conv2d(ptr(x), ptr(w), ptr(bias), ptr(conv_out), ptr(workspace), _conv_geometry(g), version_code,
              config_code, False, device, stream)
    return max_pool2d(conv_out, 2, activation=activation, return_indices=True, out=y, out_indices=indices)


def _conv_gradient(op_name, dy, other_name, other, x_shape, w_shape, stride, padding, dilation, groups, version,
                   config):
    """Checks shared by the two convolution gradients; returns (dy, other, geometry, plan)."""
    dy_op, other_op = checked_input("dy", dy), checked_input(other_name, other)
    if x_shape is None:
        x_shape = other_op.shape
    if w_shape is None:
        w_shape = other_op.shape
    g = _checks.conv2d_dims(x_shape, w_shape, stride, padding, dilation, groups)
    _checks.expect_shape("dy", dy_op.shape, g["y_shape"])
    plan = _checks.conv2d_plan(_checks.conv2d_group_geometry(g), op_name.replace("conv2d_", ""), version, config)
    require_gpu(op_name)
    return on_gpu(dy_op), on_gpu(other_op), g, plan


def conv2d_backward_input(dy, w, x_shape, *, stride=1, padding=0, dilation=1, groups=1, out=None, version=None,
                          config=None):
    """dL/dx of conv2d given dL/dy (N, K, P, Q), the weight and the input's shape. Each input
    element gathers its own sum: deterministic, no atomics. ``version`` / ``config``: as conv2d
    (the tiled version runs the forward kernel on dy with the weights flipped and transposed)."""
    x_shape = _checks.image_shape("x_shape", x_shape)
    dy, w, g, plan = _conv_gradient("conv2d_backward_input", dy, "w", w, x_shape, None, stride, padding, dilation,
                                    groups, version, config)
    out = output(out, x_shape, {"dy": dy, "w": w})
    if g["groups"] > 1:
        return _groups.backward_input(conv2d_backward_input, cupy, dy, w, x_shape, g["groups"], out, stride=stride,
                                      padding=padding, dilation=dilation, version=version, config=config)
    device, stream = launch_args()
    version_code, config_code = _conv_plan_on(g, "backward_input", plan, device)
    if out.size:
        workspace = _conv_workspace(g, version_code, "backward_input", config_code)  # alive until queued
        _C.conv2d_backward_input(ptr(dy), ptr(w), ptr(out), ptr(workspace), _conv_geometry(g), version_code,
                                 config_code, device, stream)
    return out


def conv2d_backward_weight(dy, x, w_shape, *, stride=1, padding=0, dilation=1, groups=1, bias=False, out=None,
                           out_bias=None, version=None, config=None):
    """dL/dw of conv2d given dL/dy, the input and the weight's shape (a sum over N, P, Q in a
    fixed order: deterministic). ``bias=True`` also returns the bias gradient, as ``(dw, db)``
    (``out_bias``: its array): the tiled version sums it in the same pass over dy, the others
    call ``bias_grad(dy)``. ``version`` / ``config``: as conv2d."""
    w_shape = _checks.image_shape("w_shape", w_shape)
    _checks.expect_bool("bias", bias)
    if out_bias is not None and not bias:
        raise ValueError("out_bias: given without bias=True")
    dy, x, g, plan = _conv_gradient("conv2d_backward_weight", dy, "x", x, None, w_shape, stride, padding, dilation,
                                    groups, version, config)
    out = output(out, w_shape, {"dy": dy, "x": x})
    db = output(out_bias, (g["k"],), {"dy": dy, "x": x, "out": out}, name="out_bias") if bias else None
    if g["groups"] > 1:
        return _groups.backward_weight(conv2d_backward_weight, cupy, dy, x, w_shape, g["groups"], out, db,
                                       stride=stride, padding=padding, dilation=dilation, version=version,
                                       config=config)
    device, stream = launch_args()
    version_code, config_code = _conv_plan_on(g, "backward_weight", plan, device)
    fold_bias = db is not None and version_code == _TILED and out.size > 0  # db from the same pass
    if out.size:
        workspace = _conv_workspace(g, version_code, "backward_weight", config_code)  # alive until queued
        _C.conv2d_backward_weight(ptr(dy), ptr(x), ptr(out), ptr(db) if fold_bias else 0, ptr(workspace),
                                  _conv_geometry(g), version_code, config_code, device, stream)
    if db is not None and not fold_bias:
        bias_grad(dy, out=db)
    return out if db is None else (out, db)


def _pool_geometry(g, count_include_pad=True, divisor=None):
    return [g["n"] * g["c"], g["h"], g["w"], g["p"], g["q"], *g["kernel"], *g["stride"], *g["padding"],
            int(count_include_pad), *g["dilation"], divisor or 0]


def _indices_output(out_indices, shape):
    """`out_indices` checked (int64, C-contiguous, `shape`), or a new array."""
    if out_indices is None:
        return empty(shape, cupy.int64)
    if not isinstance(out_indices, cupy.ndarray):
        raise TypeError(f"out_indices: expected a CuPy array, got {type(out_indices).__name__}")
    _checks.expect_indices("out_indices", out_indices.dtype)
    _checks.expect_shape("out_indices", out_indices.shape, shape)
    if not out_indices.flags.c_contiguous:
        raise ValueError("out_indices: expected a C-contiguous array")
    return out_indices


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False, *,
               bias=None, activation=None, out=None, out_indices=None):
    """Each window's maximum, as torch.nn.functional.max_pool2d (same arguments, same order):
    padding never wins, NaN propagates (the last NaN of a window), ties keep the first maximum.
    With ``return_indices=True``, ``(y, indices)``: also each winner's flat index h * W + w in
    its input plane (int64), what max_pool2d_backward takes. ``stride`` defaults to
    ``kernel_size``; ``padding`` is at most half the kernel; ``dilation`` spaces the taps;
    ``ceil_mode`` rounds the output size up (a last window may reach past the padded input).

    pyfast's own options (keyword-only): ``bias`` (C,) and ``activation="relu"`` pool
    relu(input + bias[c]) instead, in the same pass (a conv output's bias, ReLU and pooling:
    the same y and indices as the three run one after another); ``out`` / ``out_indices``:
    arrays to write into (``out_indices`` needs ``return_indices=True``)."""
    x_op = checked_input("input", input)
    bias_op = checked_input("bias", bias, optional=True)
    g = _checks.pool2d_dims(x_op.shape, kernel_size, stride, padding, dilation, ceil_mode)
    _checks.expect_bool("return_indices", return_indices)
    if out_indices is not None and not return_indices:
        raise ValueError("out_indices: given with return_indices=False")
    if bias_op is not None:
        _checks.expect_shape("bias", bias_op.shape, (g["c"],))
    relu = _checks.conv2d_activation(activation)
    require_gpu("max_pool2d")
    x = on_gpu(x_op)
    bias = on_gpu(bias_op) if bias_op is not None else None
    shape = g["y_shape"]
    y = output(out, shape, {"input": x, "bias": bias})
    indices = _indices_output(out_indices, shape)
    if y.size:
        _C.max_pool2d(ptr(x), ptr(y), ptr(indices), _pool_geometry(g), ptr(bias), g["c"], relu, *launch_args())
    return (y, indices) if return_indices else y


def max_pool2d_backward(dy, indices, x_shape, kernel_size=None, stride=None, padding=0, dilation=1, ceil_mode=False,
                        *, relu_output=None, out=None):
    """dL/dx of max_pool2d: each dy goes to its window's recorded index (overlapping windows
    add, in a fixed order: deterministic).

    With the forward's window (``kernel_size``, ``stride``, ``padding``, ``dilation``,
    ``ceil_mode``; stride None: the kernel) each dx element gathers from the windows that hold
    it and is written once, zeros included (the fast path); then ``relu_output``, the pooled
    output of a ReLU's output (the ``y`` max_pool2d returned), also applies that ReLU's
    backward: a window whose maximum is <= 0 passes nothing, so the ReLU layer's own backward
    pass is not needed. Without the window (the older call form) dx is zeroed and each plane's
    dy added at its indices in order. Either way indices outside the plane (or, with the
    window, outside their window) count nowhere here (checking would need a synchronization);
    the NumPy twin raises for them."""
    dy_op = checked_input("dy", dy)
    indices_op = operand("indices", indices)
    _checks.expect_indices("indices", indices_op.dtype)
    if not indices_op.contiguous:
        raise _checks.not_contiguous("indices", indices_op.shape, "cupy")
    relu_op = checked_input("relu_output", relu_output, optional=True)
    x_shape, g = _checks.max_pool2d_backward_dims(dy_op.shape, indices_op.shape, x_shape, kernel_size, stride,
                                                  padding, dilation, ceil_mode,
                                                  None if relu_op is None else relu_op.shape)
    require_gpu("max_pool2d_backward")
    dy, indices = on_gpu(dy_op), on_gpu(indices_op)
    relu_output = on_gpu(relu_op) if relu_op is not None else None
    out = output(out, x_shape, {"dy": dy, "indices": indices, "relu_output": relu_output})
    if out.size:
        n, c, h, w = x_shape
        if g is None:
            # The scatter needs only the plane and output sizes; the window fields are unused.
            geometry = [n * c, h, w, dy.shape[2], dy.shape[3], 1, 1, 1, 1, 0, 0, 1, 1, 1, 0]
            _C.max_pool2d_backward(ptr(dy), ptr(indices), ptr(out), geometry, *launch_args())
        else:
            _C.max_pool2d_backward_gather(ptr(dy), ptr(indices), ptr(relu_output), ptr(out), _pool_geometry(g),
                                          *launch_args())
    return out


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None, *, out=None):
    """Each window's mean, as torch.nn.functional.avg_pool2d (same arguments, same order):
    padding counts as zeros, and in the divisor unless ``count_include_pad=False`` (a
    ``ceil_mode`` window's part past the padded input never counts); ``divisor_override``
    divides every window by that number instead."""
    x_op = checked_input("input", input)
    _checks.expect_bool("count_include_pad", count_include_pad)
    divisor = _checks.divisor_override(divisor_override)
    g = _checks.pool2d_dims(x_op.shape, kernel_size, stride, padding, 1, ceil_mode)
    require_gpu("avg_pool2d")
    x = on_gpu(x_op)
    y = output(out, g["y_shape"], {"input": x})
    if y.size:
        _C.avg_pool2d(ptr(x), ptr(y), _pool_geometry(g, count_include_pad, divisor), *launch_args())
    return y


def avg_pool2d_backward(dy, x_shape, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                        divisor_override=None, *, out=None):
    """dL/dx of avg_pool2d (the forward's arguments after ``x_shape``): each input element
    gathers dy / divisor of its windows."""
    dy_op = checked_input("dy", dy)
    x_shape = _checks.image_shape("x_shape", x_shape)
    _checks.expect_bool("count_include_pad", count_include_pad)
    divisor = _checks.divisor_override(divisor_override)
    g = _checks.pool2d_dims(x_shape, kernel_size, stride, padding, 1, ceil_mode, name="x_shape")
    _checks.expect_shape("dy", dy_op.shape, g["y_shape"])
    require_gpu("avg_pool2d_backward")
    dy = on_gpu(dy_op)
    out = output(out, x_shape, {"dy": dy})
    if out.size:
        _C.avg_pool2d_backward(ptr(dy), ptr(out), _pool_geometry(g, count_include_pad, divisor), *launch_args())
    return out


__all__ = ["linear_mse_sgd_fit", "gather_batch", "matmul", "relu", "relu_backward", "add_bias", "bias_grad", "mse_loss",
           "softmax_cross_entropy", "cross_entropy",
           "softmax", "log_softmax", "softmax_backward", "log_softmax_backward", "accuracy", "sgd_step", "adam_step",
           "conv2d", "conv2d_backward_input",
           "conv2d_backward_weight", "conv2d_plan", "conv2d_max_pool2d", "max_pool2d", "max_pool2d_backward",
           "avg_pool2d", "avg_pool2d_backward",
           "MATMUL_VERSIONS", "DEFAULT_MATMUL_VERSION", "MATMUL_PRECISIONS", "TENSOR_CORE_VERSION",
           "CONV2D_VERSIONS", "CONV2D_PASSES", "DEFAULT_CONV2D_VERSION"]
