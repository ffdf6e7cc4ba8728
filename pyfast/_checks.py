"""Argument checks shared by pyfast.ops (GPU) and the NumPy backends (pyfast.reference, pyfast.cpu).

They look only at shapes, dtypes and flags, so both backends raise the same NumPy-style
errors: TypeError for a wrong type or dtype, ValueError naming the argument with the
expected and actual shape for a wrong shape.
"""

import functools
import importlib
import math

import numpy as np

MATMUL_VERSIONS = ("simple", "tiled")  # FP32 on the CUDA cores; index = the kernel's version number
DEFAULT_MATMUL_VERSION = "tiled"
TENSOR_CORE_VERSION = "tensor_core"  # kernel version 2: the reduced precisions below
MATMUL_PRECISIONS = ("fp32", "tf32", "bf16")  # index = the kernel's precision number
MAX_SPLIT_K = 64  # _C.matmul_max_splits(); here so the NumPy backend checks a plan without the extension
ACTIVATIONS = {None: 0, "relu": 1}
INT32_MAX = 2**31 - 1


class Bfloat16Storage:
    """The dtype of a bfloat16 GPU array where NumPy cannot name it (ml_dtypes not installed):
    PyTorch's __cuda_array_interface__ reports bfloat16 as the raw 2-byte type '|V2'."""

    name = "bfloat16"
    itemsize = 2
    kind = "V"

    def __repr__(self):
        return "bfloat16"

    __str__ = __repr__


def bfloat16_dtype():
    """ml_dtypes' bfloat16 when installed, else a Bfloat16Storage marker."""
    try:
        import ml_dtypes
    except ImportError:
        return Bfloat16Storage()
    return np.dtype(ml_dtypes.bfloat16)


def expect_float32(name, dtype):
    if is_bfloat16(dtype) or np.dtype(dtype) != np.float32:
        shown = dtype if is_bfloat16(dtype) else np.dtype(dtype)
        raise TypeError(f"{name}: expected dtype float32, got {shown}; convert with {name}.astype('float32')")


def is_bfloat16(dtype):
    """True for ml_dtypes' bfloat16 (what CuPy and PyTorch-through-DLPack arrays carry) and for
    the Bfloat16Storage marker."""
    return getattr(dtype, "name", None) == "bfloat16"


def expect_shape(name, shape, expected):
    if tuple(shape) != tuple(expected):
        raise ValueError(f"{name}: expected shape {tuple(expected)}, got {tuple(shape)}")


def expect_ndim(name, shape, ndim, what=""):
    if len(shape) != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array{what}, got shape {tuple(shape)}")


def is_integer(value):
    """A Python or NumPy int (not a bool, not a float with an integral value)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def expect_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False, got {value!r}")


def matmul_dims(a_shape, b_shape, trans_a, trans_b):
    """(M, N, K) of op(a) @ op(b); raises for ranks or inner sizes that do not match."""
    expect_bool("trans_a", trans_a)
    expect_bool("trans_b", trans_b)
    expect_ndim("a", a_shape, 2, " (a matrix)")
    expect_ndim("b", b_shape, 2, " (a matrix)")
    m, k = (a_shape[1], a_shape[0]) if trans_a else tuple(a_shape)
    k_b, n = (b_shape[1], b_shape[0]) if trans_b else tuple(b_shape)
    if k != k_b:
        raise ValueError(
            f"matmul: inner dimensions differ: op(a) is {m}x{k} (a.shape={tuple(a_shape)}, trans_a={trans_a}) "
            f"but op(b) is {k_b}x{n} (b.shape={tuple(b_shape)}, trans_b={trans_b})"
        )
    for dim_name, dim in (("M", m), ("N", n), ("K", k)):
        if dim > INT32_MAX:
            raise ValueError(f"matmul: {dim_name}={dim} exceeds the kernels' limit of 2^31-1 per dimension")
    return m, n, k


def activation_code(activation):
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {list(ACTIVATIONS)}, got {activation!r}")
    return ACTIVATIONS[activation]


def version_code(version, versions, default):
    """The kernel's version number of `version` (a name from `versions`, None: `default`)."""
    if version is None:
        version = default
    if version not in versions:
        raise ValueError(f"version: expected one of {list(versions)} or None, got {version!r}")
    return versions.index(version)


def matmul_version_code(version):
    return version_code(version, MATMUL_VERSIONS, DEFAULT_MATMUL_VERSION)


def matmul_kernel(version, precision, a_dtype, b_dtype):
    """(version number, precision number, bf16 storage) of a matmul call, after its checks.

    precision "fp32" (default) runs `version` from MATMUL_VERSIONS on float32 operands;
    "tf32" and "bf16" run the tensor-core version on operands rounded to that format, with
    float32 sums; "bf16" also takes bfloat16 operands (both a and b).
    """
    if precision is None:
        precision = "fp32"
    if precision not in MATMUL_PRECISIONS:
        raise ValueError(f"precision: expected one of {list(MATMUL_PRECISIONS)} or None, got {precision!r}")
    bf16_storage = is_bfloat16(a_dtype) or is_bfloat16(b_dtype)
    if bf16_storage:
        if precision != "bf16":
            raise TypeError(f"matmul: bfloat16 operands need precision='bf16', got precision={precision!r}")
        if not (is_bfloat16(a_dtype) and is_bfloat16(b_dtype)):
            other, dtype = ("b", b_dtype) if is_bfloat16(a_dtype) else ("a", a_dtype)
            raise TypeError(f"{other}: expected dtype bfloat16 like the other operand, got {dtype}")
    else:
        expect_float32("a", a_dtype)
        expect_float32("b", b_dtype)
    if precision == "fp32":
        if version == TENSOR_CORE_VERSION:
            raise ValueError("version: 'tensor_core' computes in precision 'tf32' or 'bf16'; pass precision= too")
        return matmul_version_code(version), 0, False
    if version not in (None, TENSOR_CORE_VERSION):
        raise ValueError(f"version: precision={precision!r} runs on version {TENSOR_CORE_VERSION!r}, got {version!r}")
    return len(MATMUL_VERSIONS), MATMUL_PRECISIONS.index(precision), bf16_storage


def matmul_plan(plan):
    """(config, splits) from a user's plan: None (the launcher chooses) or a pair of ints."""
    if plan is None:
        return -1, 1
    try:
        config, splits = (int(v) for v in plan)
    except (TypeError, ValueError):
        raise TypeError(f"plan: expected None or (config, splits), got {plan!r}") from None
    if config < -1 or not 1 <= splits <= MAX_SPLIT_K:
        raise ValueError(f"plan: expected config >= -1 and 1 <= splits <= {MAX_SPLIT_K}, got {plan!r}")
    return config, splits


def channel_view(name, shape):
    """(outer, channels, inner) of an (N, C) matrix or an (N, C, *spatial) image batch."""
    if len(shape) < 2:
        raise ValueError(f"{name}: expected at least 2 dimensions (N, C, ...), got shape {tuple(shape)}")
    inner = 1
    for dim in shape[2:]:
        inner *= dim
    return shape[0], shape[1], inner


# ------------------------------------------------------------------ losses
REDUCTIONS = ("mean", "sum")
LABEL_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))


def reduction_scales(reduction, count):
    """(loss scale, gradient scale) of a summed loss over `count` terms. The mean of nothing
    is NaN, as in NumPy and PyTorch."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of {list(REDUCTIONS)}, got {reduction!r}")
    if reduction == "sum":
        return 1.0, 1.0
    return (1.0 / count, 1.0 / count) if count else (float("nan"), float("nan"))


def legacy_reduction(size_average, reduce):
    """PyTorch's deprecated size_average / reduce: accepted as None only."""
    for name, value in (("size_average", size_average), ("reduce", reduce)):
        if value is not None:
            raise ValueError(f"{name}: deprecated in PyTorch and not supported here; use reduction= "
                             f"('mean' or 'sum'), got {value!r}")


def no_loss_weight(weight):
    """A per-element / per-class loss weight pyfast's loss kernels do not take (yet)."""
    if weight is not None:
        raise ValueError("weight: a loss weight is not supported yet; pass weight=None")


def softmax_dim(dim, ndim):
    """The axis softmax / log_softmax run over, as PyTorch: ``dim`` in [-ndim, ndim), or None
    for PyTorch's implicit choice (axis 0 for 1-D and 3-D input, else 1)."""
    if ndim < 1:
        raise ValueError("input: expected at least one dimension, got a 0-d array")
    if dim is None:
        return 0 if ndim in (1, 3) else 1
    if not is_integer(dim):
        raise TypeError(f"dim: expected an int or None, got {dim!r}")
    if not -ndim <= int(dim) < ndim:
        raise ValueError(f"dim: expected a dimension in [{-ndim}, {ndim}) of the {ndim}-D input, got {dim}")
    return int(dim) % ndim


def softmax_dtype(dtype):
    """softmax's dtype: None or float32 (pyfast computes and returns float32)."""
    if dtype is None or str(dtype) == "torch.float32":
        return
    try:
        float32 = np.dtype(dtype) == np.float32
    except TypeError:
        float32 = False
    if not float32:
        raise ValueError(f"dtype: pyfast's softmax computes in float32 only, got {dtype}")


def relu_target(inplace, out, x):
    """out of relu(input, inplace, out=): inplace=True writes into input (as torch's)."""
    expect_bool("inplace", inplace)
    if inplace:
        if out is not None and out is not x:
            raise ValueError("out: given with inplace=True (which writes into input)")
        return x
    return out


CROSS_ENTROPY_REDUCTIONS = ("mean", "sum", "none")


def cross_entropy_options(ignore_index, reduction, label_smoothing):
    """cross_entropy's options checked: (ignore_index, reduction code 0 mean / 1 sum / 2 none,
    label_smoothing as a float in [0, 1])."""
    if not is_integer(ignore_index):
        raise TypeError(f"ignore_index: expected an int, got {ignore_index!r}")
    if not -2 ** 63 <= int(ignore_index) < 2 ** 63:
        raise ValueError(f"ignore_index: expected a 64-bit int, got {ignore_index}")
    if reduction not in CROSS_ENTROPY_REDUCTIONS:
        raise ValueError(f"reduction: expected one of {list(CROSS_ENTROPY_REDUCTIONS)}, got {reduction!r}")
    smoothing = expect_real("label_smoothing", label_smoothing)
    if not 0.0 <= smoothing <= 1.0:
        raise ValueError(f"label_smoothing: expected a value in [0, 1], got {label_smoothing}")
    return int(ignore_index), CROSS_ENTROPY_REDUCTIONS.index(reduction), smoothing


def cross_entropy_dims(input_shape, target_shape, target_dtype, weight_shape):
    """(rows, classes, inner, probabilities?, the row losses' shape) of cross_entropy: (N, C) or
    (N, C, d1, ...) input (rows = N * d1 * ..., classes `inner` = d1 * ... apart), and
    (N, d1, ...) int32 / int64 class indices or float32 probabilities of the input's shape;
    weight (C,) when given."""
    if len(input_shape) < 2:
        raise ValueError(f"input: expected (N, C) or (N, C, d1, ...) logits, got shape {tuple(input_shape)}")
    n, classes, spatial = input_shape[0], input_shape[1], tuple(input_shape[2:])
    if classes < 1:
        raise ValueError(f"input: expected at least one class, got shape {tuple(input_shape)}")
    kind = np.dtype(target_dtype)
    if kind in LABEL_DTYPES:
        expect_shape("target", target_shape, (n, *spatial))
        probabilities = False
    elif kind == np.float32:
        expect_shape("target", target_shape, tuple(input_shape))
        probabilities = True
    else:
        raise TypeError(f"target: expected int32 / int64 class indices or float32 probabilities, got {kind}")
    if weight_shape is not None:
        expect_shape("weight", weight_shape, (classes,))
    inner = math.prod(spatial)
    return n * inner, classes, inner, probabilities, (n, *spatial)


def invalid_targets_error(count, classes, ignore_index):
    return ValueError(f"target: {count} label(s) outside [0, {classes}) (the number of classes) and not "
                      f"ignore_index={ignore_index}")


def mse_reduction(reduction, count):
    """(loss scale, gradient scale, per element?) of mse_loss: reduction_scales', or (1, 1, True)
    for "none" (the squares themselves, and the gradient of their sum)."""
    if reduction == "none":
        return 1.0, 1.0, True
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of {[*REDUCTIONS, 'none']}, got {reduction!r}")
    return (*reduction_scales(reduction, count), False)


def expect_labels(name, dtype):
    if np.dtype(dtype) not in LABEL_DTYPES:
        raise TypeError(f"{name}: expected dtype int32 or int64, got {np.dtype(dtype)}")


def classifier_dims(logits_shape, labels_shape=None, name="logits"):
    """(rows, classes) of (N, C) logits, with (N,) labels when given."""
    expect_ndim(name, logits_shape, 2, " (N, C)")
    rows, classes = logits_shape
    if classes < 1:
        raise ValueError(f"{name}: expected at least one class, got shape {tuple(logits_shape)}")
    if labels_shape is not None:
        expect_shape("labels", labels_shape, (rows,))
    return rows, classes


def invalid_labels_error(count, classes):
    return ValueError(f"labels: {count} label(s) outside [0, {classes}) (the number of classes)")


# --------------------------------------------------------------- optimizers
def expect_real(name, value):
    """A Python or NumPy real number (not a bool, not a string); returns it as a float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a number, got {value!r}")
    return float(value)


def expect_nonnegative(name, value):
    """A finite real number >= 0 (a hyperparameter: inf and NaN would only train to NaN)."""
    value = expect_real(name, value)
    if not 0 <= value < float("inf"):  # also rejects NaN
        raise ValueError(f"{name}: expected a finite value >= 0, got {value!r}")
    return value


def not_contiguous(name, shape, module, transposed_ok=False):
    """The ValueError for an array argument that is neither C-contiguous nor (where the op reads
    it transposed) the .T of a C-contiguous array; both backends raise it alike."""
    alternative = " or the transpose of one (as a.T)" if transposed_ok else ""
    return ValueError(f"{name}: expected a C-contiguous array{alternative} (shape {tuple(shape)}); copy it with "
                      f"{module}.ascontiguousarray({name})")


def expect_int(name, value, minimum):
    if not is_integer(value):
        raise TypeError(f"{name}: expected an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")
    return int(value)


def sgd_hyperparameters(lr, momentum, weight_decay, nesterov):
    expect_nonnegative("lr", lr)
    expect_nonnegative("momentum", momentum)
    expect_nonnegative("weight_decay", weight_decay)
    expect_bool("nesterov", nesterov)
    if nesterov and momentum == 0:
        raise ValueError("nesterov: Nesterov momentum needs momentum > 0")


def adam_hyperparameters(step, lr, betas, eps, weight_decay, decoupled):
    """(beta1, beta2, step size, sqrt of the second bias correction), as PyTorch's Adam."""
    if not is_integer(step) or step < 1:
        raise ValueError(f"step: expected an int >= 1 (the update's 1-based count), got {step!r}")
    expect_nonnegative("lr", lr)
    expect_nonnegative("eps", eps)
    expect_nonnegative("weight_decay", weight_decay)
    expect_bool("decoupled", decoupled)
    if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
        raise TypeError(f"betas: expected a pair of numbers, got {betas!r}")
    beta1, beta2 = (expect_real(name, b) for name, b in zip(("betas[0]", "betas[1]"), betas))
    for name, beta in (("betas[0]", beta1), ("betas[1]", beta2)):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"{name}: expected a value in [0, 1), got {beta!r}")
    step_size = lr / (1.0 - beta1**step)
    return beta1, beta2, step_size, float(np.sqrt(1.0 - beta2**step))


LINEAR_FIT_MAX_FLOATS = 12000  # kernels/fused/fused.cuh: one block's shared memory


def linear_fit_floats(n, f, o):
    """Floats the fused linear-regression run keeps in shared memory: the targets and the
    parameters (at most LINEAR_FIT_MAX_FLOATS)."""
    return n * o + o * (f + 1)


def linear_fit_dims(x_shape, y_shape, weight_shape, bias_shape, epochs, lr):
    """(n, f, o) of a fused linear-regression run; raises for shapes, epochs and lr."""
    expect_ndim("x", x_shape, 2, " (samples x features)")
    expect_ndim("y", y_shape, 2, " (samples x outputs)")
    n, f = x_shape
    o = y_shape[1]
    expect_shape("y", y_shape, (n, o))
    expect_shape("weight", weight_shape, (o, f))
    expect_shape("bias", bias_shape, (o,))
    if n < 1 or f < 1 or o < 1:
        raise ValueError(f"x, y: expected at least one sample, feature and output, got x {tuple(x_shape)}, "
                         f"y {tuple(y_shape)}")
    floats = linear_fit_floats(n, f, o)
    if floats > LINEAR_FIT_MAX_FLOATS:
        raise ValueError(f"x: {n} samples x {o} outputs (+ {o * (f + 1)} parameters) = {floats} floats exceed the "
                         f"fused fit's {LINEAR_FIT_MAX_FLOATS} (one block's shared memory); train with the "
                         f"layer-by-layer loop instead")
    if not is_integer(epochs) or not 0 <= epochs < 2**31:
        raise ValueError(f"epochs: expected an int >= 0, got {epochs!r}")
    expect_nonnegative("lr", lr)
    return n, f, o


def param_lists(**lists):
    """Checks parallel lists of tensors (None entries skipped); returns their common length."""
    length = None
    for name, values in lists.items():
        if values is None:
            continue
        if not isinstance(values, (list, tuple)):
            raise TypeError(f"{name}: expected a list of arrays, got {type(values).__name__}")
        if length is None:
            length = len(values)
        elif len(values) != length:
            raise ValueError(f"{name}: expected {length} arrays (one per parameter), got {len(values)}")
    return length or 0


# ------------------------------------------------------------ convolution and pooling
def pair(name, value, minimum):
    """(h, w) from an int or a pair of ints, each >= minimum."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected an int or a pair of ints, got {value!r}")
    if isinstance(value, (int, np.integer)):
        value = (value, value)
    try:
        h, w = value
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected an int or a pair of ints, got {value!r}") from None
    for v in (h, w):
        if not is_integer(v):
            raise TypeError(f"{name}: expected an int or a pair of ints, got {value!r}")
        if v < minimum:
            raise ValueError(f"{name}: expected values >= {minimum}, got {tuple(int(x) for x in value)}")
    return int(h), int(w)


CONV2D_VERSIONS = ("direct", "gemm", "implicit", "tiled")  # index = the kernel's version number
CONV2D_PASSES = ("forward", "backward_input", "backward_weight")  # index = the kernel's pass number
# version=None chooses per pass and shape: the card's measured table (pyfast/conv_tuning.json),
# else a rule written from the latest measurements (pyfast.ops.conv2d_plan says which ran).
DEFAULT_CONV2D_VERSION = None


def conv2d_version_code(version):
    """The kernel's version number of `version`, or None for "choose per pass"."""
    if version is None:
        return None
    return version_code(version, CONV2D_VERSIONS, None)


def conv2d_config(config):
    """The tiled version's configuration number (-1: its default)."""
    if config is None:
        return -1
    if not is_integer(config):
        raise TypeError(f"config: expected an int or None, got {config!r}")
    if config < 0:
        raise ValueError(f"config: expected a configuration number >= 0, got {config}")
    return int(config)


def conv2d_activation(activation):
    """True for "relu", False for None (the convolution's fused epilogues)."""
    if activation not in (None, "relu"):
        raise ValueError(f"activation: expected None or 'relu', got {activation!r}")
    return activation == "relu"


# Configurations of the tiled version per pass (kernels/conv2d/conv2d_tiled.cu; a test holds the two equal),
# and the forward configurations that can also pool their output (conv2d_max_pool2d).
CONV2D_TILED_CONFIGS = {"forward": 9, "backward_input": 9, "backward_weight": 4}
CONV2D_TILED_POOL_CONFIGS = (0, 1, 2, 4, 5, 8)
_INT32_MAX = 2 ** 31 - 1


# The passes as the tiled launcher's planner numbers them (kernels/conv2d/conv2d.cuh, Conv2dPass).
CONV2D_PLAN_PASSES = {"forward": 0, "backward_input": 1, "backward_weight": 2, "forward_pool": 3}


def conv2d_geometry(g):
    """Geometry `g` (conv2d_dims) as the compiled module takes it: the fields of Conv2dParams."""
    return [g["n"], g["c"], g["h"], g["w"], g["k"], g["r"], g["s"], g["p"], g["q"], *g["stride"], *g["padding"],
            *g["dilation"]]


@functools.lru_cache(maxsize=None)
def _tiled_planner():
    """kernels/conv2d/conv2d_tiled.cu's conv2d_tiled_plan: host code, the same in the CUDA and the emulated
    module, so either answers (None where neither is built)."""
    for name in ("pyfast._C", "pyfast._C_emu"):
        try:
            return importlib.import_module(name).conv2d_tiled_plan
        except (ImportError, AttributeError):
            continue
    return None


def conv2d_tiled_has_plan(g, pass_name, config=-1):
    """Whether the tiled version can launch this pass of geometry `g` with `config` (-1: its
    default): its launcher's own planner decides, so both backends refuse exactly what the
    launcher could not run (the class alone where no compiled module is built)."""
    planner = _tiled_planner()
    return planner is None or bool(planner(conv2d_geometry(g), CONV2D_PLAN_PASSES[pass_name], int(config), 1))


def conv2d_fits(g, version_code, pass_name=None, config=-1):
    """Whether a version takes geometry `g` (conv2d_dims): 32-bit GEMM dimensions for gemm and
    implicit; for tiled its shape class (stride 1, dilation 1, 3x3 or 5x5, padding below the
    kernel size, Q <= 256), as kernels/conv2d/*.cu's *_fits, and, given a pass, a launch plan
    for it with `config` (conv2d_tiled_has_plan)."""
    crs, npq = g["c"] * g["r"] * g["s"], g["n"] * g["p"] * g["q"]
    name = CONV2D_VERSIONS[version_code]
    if name == "gemm":
        return max(crs, npq, g["k"]) <= _INT32_MAX
    if name == "implicit":
        return max(crs, npq, g["n"] * g["h"] * g["w"], g["k"] * g["r"] * g["s"], g["c"], g["k"]) <= _INT32_MAX
    if name == "tiled":
        in_class = (g["r"] == g["s"] and g["r"] in (3, 5) and g["stride"] == (1, 1) and g["dilation"] == (1, 1)
                    and g["padding"][0] <= g["r"] - 1 and g["padding"][1] <= g["s"] - 1 and g["q"] <= 256
                    and max(g["n"] * g["c"] * g["h"] * g["w"], g["n"] * g["k"] * g["p"] * g["q"],
                            g["k"] * g["c"] * g["r"] * g["s"]) <= _INT32_MAX)
        return in_class and (pass_name is None or conv2d_tiled_has_plan(g, pass_name, config))
    return True


def conv2d_plan(g, pass_name, version, config):
    """(version code, config) for one pass as the caller asked, checked against geometry `g`;
    version code None for version=None (chosen later, per card); config -1: the default."""
    code = conv2d_version_code(version)
    config_code = conv2d_config(config)
    if code is None:
        if config is not None:
            raise ValueError(f"config: a configuration needs version='tiled', got version=None and config={config}")
    elif CONV2D_VERSIONS[code] == "tiled":
        if not conv2d_fits(g, code):
            raise ValueError("version: 'tiled' needs stride 1, dilation 1, a 3x3 or 5x5 kernel, padding below the "
                             f"kernel size and an output width <= 256; got kernel {g['r']}x{g['s']}, stride "
                             f"{g['stride']}, padding {g['padding']}, dilation {g['dilation']}, output width {g['q']}")
        count = CONV2D_TILED_CONFIGS[pass_name]
        if config_code >= count:
            raise ValueError(f"config: the tiled {pass_name} has configurations 0..{count - 1}, got {config}")
        if not conv2d_tiled_has_plan(g, pass_name, config_code):
            which = "its default configuration" if config is None else f"configuration {config}"
            raise ValueError(f"version: 'tiled' has no launch plan for the {pass_name} of this convolution with "
                             f"{which} (it would exceed a block's shared memory or the grid: C={g['c']}, "
                             f"K={g['k']}, output {g['p']}x{g['q']}); use another version or configuration")
    elif config is not None:
        raise ValueError(f"config: only version 'tiled' has configurations, got version={version!r}")
    elif not conv2d_fits(g, code):
        raise ValueError(f"version: {version!r} needs the GEMM dimensions of this convolution below 2^31")
    return code, config_code


def conv2d_max_pool2d_plan(g, version, config):
    """(pooling geometry of convolution `g`'s output (2x2, stride 2), forward plan) of
    conv2d_max_pool2d after its checks (a given tiled configuration must be able to pool)."""
    if g["p"] < 2 or g["q"] < 2:
        raise ValueError(f"x: the convolution's output {g['p']}x{g['q']} is smaller than the 2x2 pooling window")
    plan = conv2d_plan(g, "forward", version, config)
    if plan[0] == CONV2D_VERSIONS.index("tiled"):
        if config is not None and config not in CONV2D_TILED_POOL_CONFIGS:
            raise ValueError(f"config: the tiled pooled forward has configurations "
                             f"{list(CONV2D_TILED_POOL_CONFIGS)}, got {config}")
        if not conv2d_tiled_has_plan(g, "forward_pool", plan[1]):
            raise ValueError(f"version: 'tiled' has no launch plan for the pooled forward of this convolution "
                             f"(C={g['c']}, K={g['k']}, output {g['p']}x{g['q']}); use another version")
    return pool2d_dims(g["y_shape"], 2, 2, 0), plan


def conv2d_padding(padding, w_shape, stride, dilation):
    """Padding as ((top, bottom), (left, right)), PyTorch's strings included: "valid" is none,
    "same" keeps the input size (stride 1 only, as in PyTorch), the odd row or column of an
    even dilated kernel at the bottom / right (PyTorch's split)."""
    if not isinstance(padding, str):
        ph, pw = pair("padding", padding, 0)
        return (ph, ph), (pw, pw)
    if padding == "valid":
        return (0, 0), (0, 0)
    if padding != "same":
        raise ValueError(f"padding: expected an int, a pair of ints, 'valid' or 'same', got {padding!r}")
    if stride != (1, 1):
        raise ValueError(f"padding: 'same' is not supported for strided convolutions (stride={stride}), "
                         "as in PyTorch")
    extent = (dilation[0] * (w_shape[2] - 1), dilation[1] * (w_shape[3] - 1))
    return tuple((total // 2, total - total // 2) for total in extent)


def conv2d_groups(groups):
    """groups checked: an int >= 1."""
    if isinstance(groups, (bool, np.bool_)) or not is_integer(groups):
        raise TypeError(f"groups: expected an int, got {groups!r}")
    if groups < 1:
        raise ValueError(f"groups: expected an int >= 1, got {groups}")
    return int(groups)


def conv2d_group_geometry(g):
    """The geometry of one group's convolution (what each groups=1 launch computes), or g."""
    if g["groups"] == 1:
        return g
    c, k = g["c"] // g["groups"], g["k"] // g["groups"]
    return dict(g, c=c, k=k, groups=1, y_shape=(g["n"], k, g["p"], g["q"]))


def conv2d_dims(x_shape, w_shape, stride, padding, dilation, groups=1, names=("x", "w")):
    """Checks a convolution and returns its geometry as a dict (PyTorch's output-size rule:
    P = (H + 2 pad - dilation (R - 1) - 1) // stride + 1). `names`: the two arrays' argument
    names, for the messages."""
    x_name, w_name = names
    expect_ndim(x_name, x_shape, 4, " (N, C, H, W)")
    expect_ndim(w_name, w_shape, 4, " (K, C, R, S)")
    groups = conv2d_groups(groups)
    stride, dilation = pair("stride", stride, 1), pair("dilation", dilation, 1)
    (top, bottom), (left, right) = conv2d_padding(padding, w_shape, stride, dilation)
    padding, padding_end = (top, left), (bottom, right)
    n, c, h, w = x_shape
    k, c_w, r, s = w_shape
    if c % groups or k % groups:
        raise ValueError(f"groups: {groups} groups must divide both the {c} input and the {k} output channels")
    if c != c_w * groups:
        per_group = "" if groups == 1 else f" per group ({groups} groups)"
        raise ValueError(f"{w_name}: expected {c // groups} input channels{per_group} to match "
                         f"{x_name}.shape={tuple(x_shape)}, got {w_name}.shape={tuple(w_shape)}")
    for dim_name, dim in (("R", r), ("S", s), ("K", k)):
        if dim < 1:
            raise ValueError(f"{w_name}: expected a non-empty kernel, got shape {tuple(w_shape)} ({dim_name}={dim})")
    padded = (h + top + bottom, w + left + right)
    kernel = (dilation[0] * (r - 1) + 1, dilation[1] * (s - 1) + 1)
    if padded[0] < kernel[0] or padded[1] < kernel[1]:
        raise ValueError(
            f"{x_name}: padded input size per channel {padded[0]}x{padded[1]} is smaller than the dilated kernel "
            f"{kernel[0]}x{kernel[1]} ({x_name}.shape={tuple(x_shape)}, {w_name}.shape={tuple(w_shape)}, "
            f"padding={padding}, dilation={dilation})"
        )
    p = (padded[0] - kernel[0]) // stride[0] + 1
    q = (padded[1] - kernel[1]) // stride[1] + 1
    # padding: the top / left rows and columns the kernels take (an output's window starts at
    # p * stride - padding); padding_end: the bottom / right ones, which only size the output.
    return dict(n=n, c=c, h=h, w=w, k=k, r=r, s=s, p=p, q=q, stride=stride, padding=padding,
                padding_end=padding_end, dilation=dilation, groups=groups, y_shape=(n, k, p, q))


def pool2d_window(kernel_size, stride, padding, dilation=1):
    """(kernel, stride, padding, dilation) of a pooling window as (h, w) pairs (stride None or
    empty: the kernel, as PyTorch), padding at most half the kernel as in PyTorch."""
    kernel = pair("kernel_size", kernel_size, 1)
    no_stride = stride is None or (isinstance(stride, (tuple, list)) and not stride)  # PyTorch's [] too
    stride = kernel if no_stride else pair("stride", stride, 1)
    padding = pair("padding", padding, 0)
    dilation = pair("dilation", dilation, 1)
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(f"padding: expected at most half the kernel size {kernel}, got {padding}")
    return kernel, stride, padding, dilation


def pool2d_output_size(size, kernel, stride, padding, dilation, ceil_mode):
    """PyTorch's pooled size along one axis: floor (or ceil) of (size + 2 pad - extent) / stride,
    + 1, where a ceil_mode window must start inside the input or its left padding."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def pool2d_dims(x_shape, kernel_size, stride, padding, dilation=1, ceil_mode=False, name="input"):
    """Checks a pooling window and returns its geometry (PyTorch's rules: padding at most half
    the kernel, dilated windows, ceil_mode's output size, at least one output)."""
    expect_ndim(name, x_shape, 4, " (N, C, H, W)")
    kernel, stride, padding, dilation = pool2d_window(kernel_size, stride, padding, dilation)
    expect_bool("ceil_mode", ceil_mode)
    n, c, h, w = x_shape
    p = pool2d_output_size(h, kernel[0], stride[0], padding[0], dilation[0], ceil_mode)
    q = pool2d_output_size(w, kernel[1], stride[1], padding[1], dilation[1], ceil_mode)
    if p < 1 or q < 1:
        raise ValueError(f"{name}: input {h}x{w} with padding {padding} is smaller than the window {kernel}"
                         f"{'' if dilation == (1, 1) else f' dilated by {dilation}'}: the output would be {p}x{q}")
    return dict(n=n, c=c, h=h, w=w, kernel=kernel, stride=stride, padding=padding, dilation=dilation,
                ceil_mode=bool(ceil_mode), p=p, q=q, y_shape=(n, c, p, q))


def divisor_override(value):
    """avg_pool2d's divisor_override: None or a non-zero int (PyTorch's rule)."""
    if value is None:
        return None
    if not is_integer(value):
        raise TypeError(f"divisor_override: expected None or an int, got {value!r}")
    if value == 0:
        raise ValueError("divisor_override: expected a non-zero divisor, got 0")
    if abs(int(value)) >= 2 ** 31:
        raise ValueError(f"divisor_override: expected a divisor below 2^31, got {value}")
    return int(value)


def expect_indices(name, dtype):
    if np.dtype(dtype) != np.int64:
        raise TypeError(f"{name}: expected dtype int64 (as max_pool2d returns), got {np.dtype(dtype)}")


def image_shape(name, shape):
    """A (N, C, H, W) tuple of ints >= 0 passed as an argument (x_shape of the gradients).
    Sizes must be ints (as NumPy's shapes): 5.7 or a string such as "3233" is a TypeError."""
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__iter__"):
        raise TypeError(f"{name}: expected a tuple (N, C, H, W) of ints, got {shape!r}")
    shape = tuple(shape)
    if not all(is_integer(d) for d in shape):
        raise TypeError(f"{name}: expected a tuple (N, C, H, W) of ints, got {shape!r}")
    shape = tuple(int(d) for d in shape)
    if len(shape) != 4 or any(d < 0 for d in shape):
        raise ValueError(f"{name}: expected a tuple (N, C, H, W) of sizes >= 0, got {shape}")
    return shape


def max_pool2d_backward_dims(dy_shape, indices_shape, x_shape, kernel_size=None, stride=None, padding=0,
                             dilation=1, ceil_mode=False, relu_output_shape=None):
    """Checks max_pool2d_backward's arguments: dy (N, C, P, Q), indices of dy's shape, and the
    input's (N, C, H, W) (checked with image_shape); with the window (kernel_size, stride,
    padding, dilation, ceil_mode) also that it gives dy's shape, and relu_output's shape (it
    needs the window).
    Returns (x_shape as a tuple, the window geometry or None)."""
    x_shape = image_shape("x_shape", x_shape)
    expect_ndim("dy", dy_shape, 4, " (N, C, P, Q)")
    expect_shape("indices", indices_shape, dy_shape)
    expect_shape("dy", tuple(dy_shape)[:2], x_shape[:2])
    if kernel_size is None:
        if stride is not None or padding != 0 or dilation != 1 or ceil_mode:
            raise ValueError("kernel_size: stride, padding, dilation and ceil_mode describe a window, "
                             "give its kernel_size too")
        if relu_output_shape is not None:
            raise ValueError("relu_output: needs the window (kernel_size, stride, padding) of the forward pass")
        return x_shape, None
    g = pool2d_dims(x_shape, kernel_size, stride, padding, dilation, ceil_mode, name="x_shape")
    expect_shape("dy", dy_shape, g["y_shape"])
    if relu_output_shape is not None:
        expect_shape("relu_output", relu_output_shape, g["y_shape"])
    return x_shape, g


def gather_batch_dims(x_shape, index_shape, index_dtype, shifts_shape, shifts_dtype):
    """(rows, batch, planes, h, w) of gather_batch after its checks: x (N, ...) with at least 2
    dimensions, index int64 (B,), shifts None or int32 (B, 2) on images (x with 3+ dimensions)."""
    if len(x_shape) < 2:
        raise ValueError(f"x: expected samples along the first axis, (N, features...), got shape {tuple(x_shape)}")
    if np.dtype(index_dtype) != np.int64:
        raise TypeError(f"index: expected dtype int64, got {np.dtype(index_dtype)}")
    if len(index_shape) != 1:
        raise ValueError(f"index: expected a 1-D array (B,), got shape {tuple(index_shape)}")
    batch = index_shape[0]
    if shifts_shape is not None:
        if len(x_shape) < 3:
            raise ValueError(f"shifts: images to shift need (N, ..., H, W), got x.shape={tuple(x_shape)}")
        if np.dtype(shifts_dtype) != np.int32:
            raise TypeError(f"shifts: expected dtype int32, got {np.dtype(shifts_dtype)}")
        expect_shape("shifts", shifts_shape, (batch, 2))
    h, w = (x_shape[-2], x_shape[-1]) if len(x_shape) >= 3 else (1, x_shape[-1])
    planes = math.prod(x_shape[1:-2]) if len(x_shape) >= 3 else 1
    return x_shape[0], batch, planes, h, w
