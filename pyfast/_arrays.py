"""The array interop in front of every op (pyfast.ops): what an array argument is (a CuPy array,
or a CUDA array offering DLPack or ``__cuda_array_interface__``: PyTorch tensors, bfloat16
ones included, Numba arrays), read without touching the GPU so that every argument check runs
on machines without one; the checks shared by all ops (dtype, contiguity, a 2-D transposed view
where an op can read it transposed, the device); outputs (``out=`` checked against the result
and the inputs it must not overlap, or a new array, kept alive by a graph being captured); and
the pointers and stream a launch takes."""

import numpy as np

from pyfast import _checks
from pyfast._device import require_gpu

try:
    import cupy
except ImportError:  # reported by require_gpu()
    cupy = None

_DLPACK_CUDA = 2  # DLDeviceType kDLCUDA


class Operand:
    """An array argument's metadata, read without touching the GPU, so every argument
    check runs (and is tested) on machines without one."""

    __slots__ = ("name", "obj", "shape", "dtype", "contiguous", "f_contiguous", "readonly")

    def __init__(self, name, obj, shape, dtype, contiguous, readonly=False, f_contiguous=False):
        self.name, self.obj, self.shape = name, obj, tuple(int(d) for d in shape)
        self.dtype, self.contiguous, self.readonly = dtype, contiguous, readonly
        self.f_contiguous = f_contiguous  # column-major: a C-contiguous array's .T when 2-D

    @property
    def size(self):
        return int(np.prod(self.shape, dtype=np.int64))


def _c_contiguous(shape, strides, itemsize):
    expected = itemsize
    for dim, stride in zip(reversed(shape), reversed(strides)):
        if dim != 1 and stride != expected:
            return False
        expected *= dim
    return True


def _from_interface(name, obj, interface):
    if not isinstance(interface, dict) or not {"shape", "typestr", "data"} <= interface.keys():
        raise TypeError(f"{name}: __cuda_array_interface__ must be a dict with shape, typestr and data")
    try:
        shape = tuple(int(d) for d in interface["shape"])
        dtype = np.dtype(interface["typestr"])
        pointer, readonly = interface["data"]
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name}: malformed __cuda_array_interface__ ({error})") from None
    if any(d < 0 for d in shape):
        raise ValueError(f"{name}: __cuda_array_interface__ has a negative dimension: {shape}")
    strides = interface.get("strides")
    contiguous = strides is None or _c_contiguous(shape, strides, dtype.itemsize)
    f_contiguous = strides is not None and _c_contiguous(shape[::-1], strides[::-1], dtype.itemsize)
    if pointer == 0 and int(np.prod(shape)) > 0:
        raise ValueError(f"{name}: __cuda_array_interface__ has a null data pointer")
    if dtype.kind == "V" and dtype.itemsize == 2 and _is_torch_bfloat16(obj):
        dtype = _checks.bfloat16_dtype()  # PyTorch reports bfloat16 as the raw 2-byte type
    return Operand(name, obj, shape, dtype, contiguous, bool(readonly), f_contiguous)


def _is_torch_bfloat16(obj):
    return type(obj).__module__.startswith("torch") and str(getattr(obj, "dtype", "")) == "torch.bfloat16"


def operand(name, x):
    """Reads the metadata of array argument `name`; raises TypeError for non-GPU objects."""
    if cupy is not None and isinstance(x, cupy.ndarray):
        return Operand(name, x, x.shape, x.dtype, x.flags.c_contiguous, f_contiguous=x.flags.f_contiguous)
    if isinstance(x, np.ndarray):
        raise TypeError(
            f"{name}: expected a CuPy array or a CUDA array, got a NumPy array; "
            f"move it to the GPU with cupy.asarray({name}), or use pyfast.reference on the CPU"
        )
    has_dlpack = hasattr(x, "__dlpack__") and hasattr(x, "__dlpack_device__")
    interface = None
    try:
        interface = x.__cuda_array_interface__
    except AttributeError:
        interface = None
    except Exception as error:  # a PyTorch tensor that requires grad, or of a dtype CAI lacks (bfloat16)
        if not has_dlpack:
            raise TypeError(f"{name}: cannot read its __cuda_array_interface__: {error}") from None
        interface_error = error
    else:
        interface_error = None
    if interface is not None:
        return _from_interface(name, x, interface)
    if has_dlpack:
        device_type = x.__dlpack_device__()[0]
        if int(device_type) != _DLPACK_CUDA:
            raise TypeError(f"{name}: expected an array on a CUDA device, got one on DLPack device type {device_type}")
        require_gpu("(DLPack input)")
        bfloat16 = _is_torch_bfloat16(x)
        try:
            if bfloat16:  # the bits as int16: CuPy takes those whether or not it knows bfloat16
                import torch

                x = x.view(torch.int16)
            array = cupy.from_dlpack(x)
        except Exception as error:  # noqa: BLE001 - reported as the argument's type problem
            detail = f"__cuda_array_interface__: {interface_error}; " if interface_error else ""
            raise TypeError(f"{name}: cannot read its __cuda_array_interface__ or DLPack ({detail}DLPack: {error})") \
                from None
        op = operand(name, array)
        if bfloat16:
            op.dtype = _checks.bfloat16_dtype()
        return op
    raise TypeError(f"{name}: expected a CuPy array or a CUDA array, got {type(x).__module__}.{type(x).__name__}")


def checked_input(name, x, *, optional=False, check_dtype=True, transposed_ok=False):
    """An input's metadata after the dtype (float32 unless the caller checks it) and
    contiguity checks. ``transposed_ok``: a 2-D column-major array (the .T of a C-contiguous
    one) passes too; the caller reads it transposed (matmul folds it into trans_a / trans_b)."""
    if x is None and optional:
        return None
    op = operand(name, x)
    if check_dtype:
        _checks.expect_float32(name, op.dtype)
    if not op.contiguous and not (transposed_ok and len(op.shape) == 2 and op.f_contiguous):
        raise _checks.not_contiguous(name, op.shape, "cupy", transposed_ok)
    return op


def untransposed(x, op, trans):
    """(C-contiguous array, transpose flag) reading the same matrix as operand `op` read with
    `trans`: a column-major view is its C-contiguous transpose read with the flag flipped."""
    if op.contiguous:
        return x, trans
    return x.T, not trans


def on_gpu(op):
    """The CuPy array of a checked operand, on the current device."""
    x = op.obj
    if not isinstance(x, cupy.ndarray):
        if _is_torch_bfloat16(x):
            # The kernels read the bits: the same memory as int16 is enough, and CuPy takes that
            # from PyTorch whether or not it knows bfloat16 itself.
            import torch

            x = x.view(torch.int16)
        # DLPack, when offered, orders the producer's stream before ours on the device;
        # __cuda_array_interface__ alone may make CuPy wait on the host (its v3 rule).
        if hasattr(x, "__dlpack__"):
            x = cupy.from_dlpack(x)
        else:
            x = cupy.asarray(x)
    device = cupy.cuda.runtime.getDevice()
    if x.device.id != device:
        raise ValueError(
            f"{op.name}: is on device {x.device.id} but the current device is {device}; "
            f"run the op under `with cupy.cuda.Device({x.device.id}):`"
        )
    return x


def _byte_range(x):
    return x.data.ptr, x.data.ptr + x.nbytes


# While pyfast.graph captures a CUDA graph this is a list, and every array an op allocates
# (outputs, workspaces, scalars) is appended to it: the graph owns that memory from then on,
# so CuPy's pool cannot hand it to anyone else while the graph may replay.
capture_keepalive = None


def empty(shape, dtype=np.float32):
    x = cupy.empty(shape, dtype=dtype)
    if capture_keepalive is not None:
        capture_keepalive.append(x)
    return x


def output(out, shape, inputs, *, in_place_ok=(), name="out"):
    """`out` checked against the result's shape, or a new array. `out` may be exactly
    one of `in_place_ok` (same memory, same shape) but must not overlap any other input."""
    if out is None:
        return empty(shape, cupy.float32)
    if not isinstance(out, cupy.ndarray):
        raise TypeError(f"{name}: expected a CuPy array, got {type(out).__module__}.{type(out).__name__}")
    _checks.expect_float32(name, out.dtype)
    _checks.expect_shape(name, out.shape, shape)
    if not out.flags.c_contiguous:
        raise _checks.not_contiguous(name, out.shape, "cupy")
    device = cupy.cuda.runtime.getDevice()
    if out.device.id != device:
        raise ValueError(f"{name}: is on device {out.device.id} but the current device is {device}")
    if out.size:
        out_start, out_end = _byte_range(out)
        for input_name, x in inputs.items():
            if x is None or x.size == 0:
                continue
            start, end = _byte_range(x)
            if start < out_end and out_start < end:
                if input_name in in_place_ok and (start, end) == (out_start, out_end):
                    continue
                raise ValueError(f"{name}: overlaps input {input_name}; pass a separate output array")
    return out


def launch_args():
    return cupy.cuda.runtime.getDevice(), cupy.cuda.get_current_stream().ptr


def ptr(x):
    return 0 if x is None else x.data.ptr
