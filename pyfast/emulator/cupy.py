"""The part of CuPy's API that pyfast, its tests and its users' first scripts use, on host memory:
what ``import cupy`` gives under ``PYFAST_EMULATE=1`` (installed by ``import pyfast``).

- ``ndarray`` holds NumPy data in "device" memory the emulator allocates (256-byte aligned,
  exactly the size asked, counted against the emulated card, poisoned with all bits set by
  ``empty``); ``x.data.ptr`` is the address the emulated kernels read. Like CuPy it refuses to
  turn into a NumPy array implicitly (``np.asarray(x)``: TypeError; use ``x.get()``), refuses
  NumPy arrays as ufunc operands, and returns 0-d arrays, not scalars, from indexing and
  reductions.
- Every NumPy function is here under its name (``cupy.zeros``, ``cupy.maximum``, ...), as are the
  ``cupy.cuda`` pieces pyfast calls: runtime queries (the emulated card), ``Stream`` (all work is
  synchronous), ``Event``, stream capture into a ``Graph`` that replays the recorded kernel
  launches and ``ElementwiseKernel`` calls, the memory-pool switches (no pool: every allocation is
  exact), ``OutOfMemoryError`` beyond the card's memory.
- DLPack: arrays export their memory as CPU memory, and ``from_dlpack`` takes PyTorch CPU
  tensors as device memory (the stand-in for CUDA tensors, without a copy: pyfast.torch).
- Not here: CuPy's own kernels (``RawKernel``, ``ReductionKernel``), DLPack exchange with other
  libraries' (CUDA) arrays, multiple devices.
"""

import functools
import itertools
import numbers
import re
import time
import types
import weakref

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

__version__ = "emulated"
_pyfast_emulator = True  # how pyfast recognises this module in sys.modules
_DLPACK_CPU = 1  # DLDeviceType kDLCPU
_extension = None  # pyfast._C_emu, handed over by pyfast.emulator.loader.install (which imports this module)


def use(extension):
    """Run on `extension` (the emulated module), the one pyfast.emulator.loader loaded."""
    global _extension
    _extension = extension


def _ext():
    return _extension.emulator


# ------------------------------------------------------------------------------- memory
class _Allocations:
    """Live allocations by address, so a raw pointer (from __cuda_array_interface__) can be
    mapped back to the memory it points into."""

    def __init__(self):
        self._by_start = weakref.WeakValueDictionary()

    def add(self, allocation):
        self._by_start[allocation.ptr] = allocation

    def containing(self, pointer, nbytes):
        for start, allocation in list(self._by_start.items()):
            if start <= pointer and pointer + nbytes <= start + allocation.nbytes:
                return allocation
        return None


_allocations = _Allocations()


def _device_buffer(nbytes):
    """A uint8 NumPy array over `nbytes` of emulated device memory."""
    try:
        allocation = _ext().Allocation(int(nbytes))
    except MemoryError:
        total = int(_ext().properties()["totalGlobalMem"])
        raise cuda.memory.OutOfMemoryError(int(nbytes), _ext().allocated_bytes(), total) from None
    _allocations.add(allocation)
    return np.frombuffer(allocation, dtype=np.uint8)


def _device_empty(shape, dtype=float, order="C"):
    dtype = np.dtype(dtype)
    shape = (int(shape),) if isinstance(shape, numbers.Integral) else tuple(int(d) for d in shape)
    count = int(np.prod(shape, dtype=np.int64))
    buffer = _device_buffer(count * dtype.itemsize)
    buffer.fill(0xFF)  # uninitialized device memory: NaN as float, -1 as integers
    return buffer.view(dtype).reshape(shape, order=order) if count else np.empty(shape, dtype, order=order)


def _to_device(host, dtype=None, order="K"):
    host = np.asarray(host, dtype=dtype)
    order = "F" if (order == "F" or (order in ("K", "A") and host.flags.f_contiguous and not host.flags.c_contiguous)) \
        else "C"
    device = _device_empty(host.shape, host.dtype, order=order)
    np.copyto(device, host, casting="unsafe")
    return device


# ------------------------------------------------------------------------------- capture
def _capturing():
    """The stream capturing the work issued now (the current one), or None."""
    stream = cuda.get_current_stream()
    return stream if stream._graph is not None else None


def _not_while_capturing(what):
    if _capturing() is not None:
        raise cuda.runtime.CUDARuntimeError(
            f"cudaErrorStreamCaptureUnsupported: {what} is not possible while the current stream captures a "
            f"graph (operation not permitted when stream is capturing); the emulator records kernel launches "
            f"and ElementwiseKernel calls only")


# ------------------------------------------------------------------------------- arrays
def _unwrap(x):
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v) for v in x)
    if isinstance(x, dict):
        return {k: _unwrap(v) for k, v in x.items()}
    return x


def _bases(arrays):
    return [a for a in arrays if isinstance(a, np.ndarray)]


def _wrap(result, sources=()):
    """A NumPy result as device arrays: views of device memory stay views, new host arrays are
    copied to device memory, scalars become 0-d arrays (as CuPy's reductions return)."""
    if isinstance(result, ndarray):
        return result
    if isinstance(result, np.ndarray):
        if result.size and any(np.may_share_memory(result, s) for s in sources):
            return ndarray._of(result)
        return ndarray._of(_to_device(result))
    if isinstance(result, np.generic):
        return ndarray._of(_to_device(np.asarray(result)))
    if isinstance(result, tuple):
        return tuple(_wrap(r, sources) for r in result)
    if isinstance(result, list):
        return [_wrap(r, sources) for r in result]
    return result


def _reject_host_arrays(values, what):
    for v in values:
        if isinstance(v, np.ndarray):
            raise TypeError(f"Unsupported type {type(v)} ({what} takes CuPy arrays and scalars; move NumPy "
                            f"arrays to the device with cupy.asarray)")


class _Flags:
    __slots__ = ("_flags",)

    def __init__(self, flags):
        self._flags = flags

    c_contiguous = property(lambda self: self._flags.c_contiguous)
    f_contiguous = property(lambda self: self._flags.f_contiguous)
    owndata = property(lambda self: True)

    def __getitem__(self, key):
        return {"C_CONTIGUOUS": self.c_contiguous, "F_CONTIGUOUS": self.f_contiguous, "OWNDATA": True}[key]


class MemoryPointer:
    """The address of an array's first element on the (emulated) device."""

    __slots__ = ("ptr", "device_id")

    def __init__(self, ptr):
        self.ptr = ptr
        self.device_id = 0

    def __int__(self):
        return self.ptr


# Methods that only reinterpret memory: allowed while a stream captures.
_VIEW_METHODS = {"reshape", "view", "transpose", "swapaxes", "squeeze", "ravel"}


class ndarray(NDArrayOperatorsMixin):
    """An array in emulated device memory (see the module's docstring)."""

    __slots__ = ("_a", "__weakref__")
    __array_priority__ = 100

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        if memptr is not None or strides is not None:
            raise NotImplementedError("pyfast emulator: ndarray(memptr=, strides=) is not emulated")
        self._a = _device_empty(shape, dtype, order=order)

    @classmethod
    def _of(cls, host):
        obj = object.__new__(cls)
        obj._a = host
        return obj

    # --- what an array is
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    size = property(lambda self: self._a.size)
    ndim = property(lambda self: self._a.ndim)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: _Flags(self._a.flags))
    T = property(lambda self: ndarray._of(self._a.T))
    data = property(lambda self: MemoryPointer(self._a.ctypes.data))
    device = property(lambda self: cuda.Device(0))

    @property
    def __cuda_array_interface__(self):
        return {"shape": self.shape, "typestr": self.dtype.str, "descr": self.dtype.descr,
                "data": (self._a.ctypes.data, False), "version": 3,
                "strides": None if self._a.flags.c_contiguous else self.strides}

    # --- DLPack: the emulator's device memory is host memory, so it is exchanged as CPU memory
    # (torch.from_dlpack gives a CPU tensor over the same bytes; pyfast.torch relies on it).
    def __dlpack__(self, **kwargs):
        return self._a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()

    # --- host transfers (synchronizing: refused while capturing, as on the GPU)
    def get(self, stream=None, order="C", out=None):
        _not_while_capturing("copying an array to the host")
        if out is not None:
            np.copyto(out, self._a)
            return out
        return np.array(self._a, order=order, copy=True)

    def set(self, arr, stream=None):
        _not_while_capturing("copying an array from the host")
        np.copyto(self._a, np.asarray(_unwrap(arr)), casting="unsafe")

    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a "
                        "NumPy array explicitly.")

    def item(self):
        _not_while_capturing("reading an array's value")
        return self._a.item()

    def tolist(self):
        _not_while_capturing("reading an array's values")
        return self._a.tolist()

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __index__(self):
        return int(self.item())

    def __complex__(self):
        return complex(self.item())

    def __bool__(self):
        _not_while_capturing("reading an array's truth value")
        return bool(self._a)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        for i in range(len(self._a)):
            yield self[i]

    def __repr__(self):
        return repr(self._a)

    def __str__(self):
        return str(self._a)

    def __format__(self, spec):
        return format(self._a.item() if self.ndim == 0 else self._a, spec)

    def __reduce__(self):
        return (_from_host, (self.get(),))

    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo):
        return self.copy()

    __hash__ = None

    # --- indexing
    def __getitem__(self, key):
        key = _unwrap(key)
        if _capturing() is not None and not _basic_index(key):
            _not_while_capturing("indexing that copies (advanced indexing)")
        result = self._a[key]
        if isinstance(result, np.generic):  # CuPy gives a 0-d array (a view) where NumPy gives a scalar
            result = self._a[(*key, Ellipsis) if isinstance(key, tuple) else (key, Ellipsis)]
        return _wrap(result, (self._a,))

    def __setitem__(self, key, value):
        _not_while_capturing("assigning into an array")
        self._a[_unwrap(key)] = _unwrap(value)

    # --- arithmetic: NumPy's ufuncs on the device data
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        _reject_host_arrays([*inputs, *kwargs.get("out", ())], f"numpy.{ufunc.__name__}")
        _not_while_capturing(f"the ufunc {ufunc.__name__}")
        args, kwargs = _unwrap(inputs), _unwrap(kwargs)
        result = getattr(ufunc, method)(*args, **kwargs)
        if "out" in kwargs:
            wrapped = tuple(ndarray._of(o) for o in kwargs["out"])
            return wrapped[0] if len(wrapped) == 1 else wrapped
        return _wrap(result, _bases(args))

    def __array_function__(self, func, types, args, kwargs):
        ours = globals().get(func.__name__)
        if ours is None:
            ours = _numpy_function(func)
        return ours(*args, **kwargs)

    # --- everything else NumPy arrays have, on the device data
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        attribute = getattr(self._a, name)
        if not callable(attribute):
            return _wrap(attribute, (self._a,))

        @functools.wraps(attribute)
        def method(*args, **kwargs):
            if name not in _VIEW_METHODS:
                _not_while_capturing(f"ndarray.{name}")
            args, kwargs = _unwrap(args), _unwrap(kwargs)
            result = attribute(*args, **kwargs)
            if result is None:
                return None
            if "out" in kwargs:
                return ndarray._of(kwargs["out"])
            return _wrap(result, (self._a,))

        return method

    def copy(self, order="C"):
        _not_while_capturing("ndarray.copy")
        return ndarray._of(_to_device(self._a, order=order))

    def astype(self, dtype, order="K", casting=None, subok=None, copy=True):
        if not copy and np.dtype(dtype) == self.dtype:
            return self
        _not_while_capturing("ndarray.astype")
        return ndarray._of(_to_device(self._a.astype(dtype, order=order)))

    def fill(self, value):
        _not_while_capturing("ndarray.fill")
        self._a.fill(value)


ndarray.__module__ = "cupy"  # pyfast and its tests recognise CuPy arrays by their type's module


def _basic_index(key):
    parts = key if isinstance(key, tuple) else (key,)
    return all(isinstance(p, (numbers.Integral, slice, type(Ellipsis), type(None))) for p in parts)


def _from_host(host):
    return ndarray._of(_to_device(host))


# ------------------------------------------------------------------------- array creation
def _creation(name):
    """cupy.<name>(...): NumPy's, in device memory."""
    numpy_function = getattr(np, name)

    @functools.wraps(numpy_function)
    def create(*args, **kwargs):
        _not_while_capturing(f"cupy.{name}")
        return ndarray._of(_to_device(numpy_function(*_unwrap(args), **_unwrap(kwargs))))

    return create


def empty(shape, dtype=float, order="C"):
    return ndarray._of(_device_empty(shape, dtype, order=order))


def empty_like(a, dtype=None, order="K", subok=None, shape=None):
    a = _unwrap(a)
    order = "F" if order == "F" or (order in ("K", "A") and a.flags.f_contiguous and not a.flags.c_contiguous) \
        else "C"
    return empty(a.shape if shape is None else shape, a.dtype if dtype is None else dtype, order=order)


def asarray(a, dtype=None, order=None, *, blocking=False):
    """A device array of `a`: the same array when nothing needs converting, else a copy on the
    device (from host data, or from another array's __cuda_array_interface__)."""
    if isinstance(a, ndarray):
        if dtype is None or np.dtype(dtype) == a.dtype:
            return a
        return a.astype(dtype)
    interface = getattr(a, "__cuda_array_interface__", None)
    if interface is not None:
        return _from_interface(a, interface, dtype)
    if hasattr(a, "__dlpack__") and hasattr(a, "__dlpack_device__") and int(a.__dlpack_device__()[0]) == 2:
        raise TypeError("pyfast emulator: arrays of another GPU library (DLPack from a CUDA device) are not emulated")
    _not_while_capturing("copying host data to the device")
    return ndarray._of(_to_device(_unwrap(a), dtype=dtype, order=order or "K"))


def _from_interface(obj, interface, dtype):
    shape = tuple(interface["shape"])
    typestr = np.dtype(interface["typestr"])
    pointer = interface["data"][0]
    nbytes = int(np.prod(shape, dtype=np.int64)) * typestr.itemsize
    allocation = _allocations.containing(pointer, nbytes) if nbytes else None
    if nbytes and allocation is None:
        raise cuda.runtime.CUDARuntimeError(
            f"cudaErrorInvalidValue: pyfast emulator: {type(obj).__name__}'s __cuda_array_interface__ points at "
            f"{pointer:#x}, outside the emulator's device memory")
    if not nbytes:
        return empty(shape, typestr)
    host = np.ndarray(shape, dtype=typestr, buffer=allocation, offset=pointer - allocation.ptr,
                      strides=interface.get("strides"))
    array = ndarray._of(host)
    return array if dtype is None else array.astype(dtype)


def array(obj, dtype=None, copy=True, order="K", ndmin=0):
    if isinstance(obj, ndarray) and not copy:
        return asarray(obj, dtype)
    host = obj.get() if isinstance(obj, ndarray) else obj
    return ndarray._of(_to_device(np.array(host, dtype=dtype, order=order, ndmin=ndmin)))


def ascontiguousarray(a, dtype=None):
    if isinstance(a, ndarray) and a.flags.c_contiguous and (dtype is None or np.dtype(dtype) == a.dtype):
        return a
    return asarray(np.ascontiguousarray(a.get() if isinstance(a, ndarray) else a, dtype=dtype))


def asnumpy(a, stream=None, order="C", out=None):
    if isinstance(a, ndarray):
        return a.get(stream=stream, order=order, out=out)
    return np.asarray(a, order=order)


def from_dlpack(x):
    """The same memory as a device array. Under the emulator a PyTorch CPU tensor stands in for
    a CUDA one (pyfast.torch's tensors on the CPU): its memory is taken as it is, no copy."""
    if isinstance(x, ndarray):
        return x
    if type(x).__module__.startswith("torch") and hasattr(x, "__dlpack_device__") \
            and int(x.__dlpack_device__()[0]) == _DLPACK_CPU:
        host = np.from_dlpack(x)
        # The tensor's whole storage is registered (its views share one range) while this array
        # lives, so the profiler counts the kernels' accesses to it as device memory.
        storage = x.untyped_storage()
        start, nbytes = storage.data_ptr(), storage.nbytes()
        if nbytes and _allocations.containing(start, nbytes) is None:  # not already emulated memory
            _ext().register_host_memory(start, nbytes)
            weakref.finalize(host, _ext().unregister_host_memory, start, nbytes)
        return ndarray._of(host)
    raise TypeError(f"pyfast emulator: DLPack from {type(x).__module__}.{type(x).__name__} is not emulated (the "
                    f"emulator's device memory is its own; PyTorch CPU tensors are taken as device memory)")


def get_array_module(*args):
    import sys

    return sys.modules[__name__] if any(isinstance(a, ndarray) for a in args) else np


def _numpy_function(numpy_function):
    """NumPy's function on device arrays: arguments unwrapped, results in device memory (views of
    an argument's memory stay views)."""

    @functools.wraps(numpy_function)
    def call(*args, **kwargs):
        name = getattr(numpy_function, "__name__", "a NumPy function")
        _not_while_capturing(f"cupy.{name}")
        args, kwargs = _unwrap(args), _unwrap(kwargs)
        result = numpy_function(*args, **kwargs)
        if "out" in kwargs and kwargs["out"] is not None:
            return ndarray._of(kwargs["out"]) if isinstance(kwargs["out"], np.ndarray) else kwargs["out"]
        flat = [a for a in itertools.chain(args, kwargs.values()) if isinstance(a, np.ndarray)]
        flat += [v for a in args if isinstance(a, (list, tuple)) for v in a if isinstance(v, np.ndarray)]
        return _wrap(result, flat)

    return call


_CREATION = {"zeros", "ones", "full", "arange", "linspace", "logspace", "eye", "identity", "zeros_like",
             "ones_like", "full_like", "tri"}


@functools.lru_cache(maxsize=None)
def _module_attribute(name):
    value = getattr(np, name)
    if name in _CREATION:
        return _creation(name)
    if isinstance(value, np.ufunc):
        return value  # applied to device arrays, it comes back through ndarray.__array_ufunc__
    if callable(value) and not isinstance(value, type):
        return _numpy_function(value)
    return value  # dtypes, constants (nan, inf, pi, newaxis)


def __getattr__(name):
    if name.startswith("__") or not hasattr(np, name):
        raise AttributeError(f"module 'cupy' (pyfast emulator) has no attribute {name!r}")
    return _module_attribute(name)


# ------------------------------------------------------------------------- random
class _Generator:
    """cupy.random.Generator: NumPy's generator, results in device memory."""

    def __init__(self, seed=None):
        self._rng = np.random.default_rng(seed)

    def __getattr__(self, name):
        attribute = getattr(self._rng, name)
        if not callable(attribute):
            return attribute

        @functools.wraps(attribute)
        def draw(*args, **kwargs):
            result = attribute(*_unwrap(args), **_unwrap(kwargs))
            return ndarray._of(_to_device(result)) if isinstance(result, (np.ndarray, np.generic)) else result

        return draw


def _random_attribute(name):
    value = getattr(np.random, name)
    if not callable(value):
        return value

    @functools.wraps(value)
    def call(*args, **kwargs):
        result = value(*_unwrap(args), **_unwrap(kwargs))
        return ndarray._of(_to_device(result)) if isinstance(result, (np.ndarray, np.generic)) else result

    return call


random = types.ModuleType("cupy.random", "NumPy's random module, results in device memory.")
random.default_rng = _Generator
random.__getattr__ = _random_attribute


# ------------------------------------------------------------------------- ElementwiseKernel
_C_TYPES = {"float": "float32", "double": "float64", "int": "int32", "long long": "int64", "long": "int64",
            "unsigned int": "uint32", "unsigned long long": "uint64", "bool": "bool", "float32": "float32",
            "float64": "float64", "int32": "int32", "int64": "int64", "uint32": "uint32", "uint64": "uint64"}
_CAST = re.compile(r"\(\s*(" + "|".join(sorted(map(re.escape, _C_TYPES), key=len, reverse=True)) + r")\s*\)\s*"
                   r"([A-Za-z_]\w*|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?f?)")
_STATEMENT = re.compile(r"^\s*([A-Za-z_]\w*)\s*([-+*/]?=)\s*(.+?)\s*$")


class ElementwiseKernel:
    """CuPy's elementwise kernel for simple operations: statements ``out = expr`` or ``out op= expr``
    over the parameters, C casts of names and literals allowed; evaluated with NumPy over the
    broadcast arguments, recorded when the current stream captures a graph."""

    def __init__(self, in_params, out_params, operation, name="kernel", **kwargs):
        self.name = name
        self.inputs = self._params(in_params)
        self.outputs = self._params(out_params)
        self.statements = []
        for text in filter(None, (s.strip() for s in operation.split(";"))):
            match = _STATEMENT.match(text)
            if match is None or match.group(1) not in {n for _, n in self.outputs}:
                raise NotImplementedError(f"pyfast emulator: ElementwiseKernel {name}: only `output = expr` and "
                                          f"`output op= expr` statements are emulated, not {text!r}")
            expression = _CAST.sub(lambda m: f"_cast('{_C_TYPES[m.group(1)]}', {m.group(2).rstrip('f')})",
                                   match.group(3))
            self.statements.append((match.group(1), match.group(2), compile(expression, name, "eval")))

    @staticmethod
    def _params(text):
        params = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            dtype, param = part.rsplit(None, 1)
            params.append((np.dtype(_C_TYPES.get(dtype, dtype)), param))
        return params

    def __call__(self, *args):
        if len(args) != len(self.inputs) + len(self.outputs):
            raise TypeError(f"{self.name}: expected {len(self.inputs) + len(self.outputs)} arguments "
                            f"(outputs included), got {len(args)}")
        _reject_host_arrays(args, f"ElementwiseKernel {self.name}")
        run = functools.partial(self._run, args)
        stream = _capturing()
        if stream is not None:
            stream._graph.append(run)
        else:
            run()
        return args[len(self.inputs)] if len(self.outputs) == 1 else args[len(self.inputs):]

    def _run(self, args):
        env = {"_cast": lambda dtype, v: np.asarray(v).astype(dtype)}
        for (dtype, name), value in zip(self.inputs, args):
            env[name] = np.asarray(_unwrap(value)).astype(dtype, copy=False)
        outputs = {}
        for (dtype, name), value in zip(self.outputs, args[len(self.inputs):]):
            outputs[name] = _unwrap(value)
            env[name] = outputs[name].astype(dtype, copy=False)
        for target, op, code in self.statements:
            value = eval(code, {"np": np}, env)  # noqa: S307 - the kernel's own operation text
            current = env[target]
            value = {"=": lambda: value, "+=": lambda: current + value, "-=": lambda: current - value,
                     "*=": lambda: current * value, "/=": lambda: current / value}[op]()
            env[target] = np.asarray(value).astype(outputs[target].dtype)
            np.copyto(outputs[target], env[target], casting="unsafe")


# ------------------------------------------------------------------------- cupy.cuda
def _namespace(name, **members):
    """A module object (so that `import cupy.cuda.runtime` finds it in sys.modules too)."""
    module = types.ModuleType(name)
    module.__dict__.update(members)
    return module


class CUDARuntimeError(RuntimeError):
    def __init__(self, message):
        super().__init__(message)
        self.status = message.split(":", 1)[0]


class OutOfMemoryError(MemoryError):
    def __init__(self, size, allocated, limit):
        super().__init__(f"Out of memory allocating {size:,} bytes (allocated so far: {allocated:,} bytes, "
                         f"limit set to: {limit:,} bytes) (pyfast emulator)")
        self.size, self.allocated, self.limit = size, allocated, limit


class Device:
    def __init__(self, device=None):
        self.id = 0 if device is None else int(device)
        if self.id != 0:
            raise CUDARuntimeError("cudaErrorInvalidDevice: invalid device ordinal (the emulator has device 0)")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def use(self):
        pass

    def synchronize(self):
        _not_while_capturing("Device.synchronize")

    @property
    def compute_capability(self):
        properties = _ext().properties()
        return f"{properties['major']}{properties['minor']}"

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return hash(self.id)


_stream_handles = itertools.count(0x5000, 0x10)
_streams = weakref.WeakValueDictionary()


class Stream:
    """A stream of the emulated device: work runs when it is issued, so synchronizing does
    nothing; begin_capture() .. end_capture() records the kernel launches (and ElementwiseKernel
    calls) issued on it instead of running them, into a Graph."""

    def __init__(self, null=False, non_blocking=False, ptr=None, priority=0):
        self.ptr = 0 if null else next(_stream_handles)
        self.non_blocking = non_blocking
        self._graph = None
        _streams[self.ptr] = self

    def __enter__(self):
        _current_streams.append(self)
        return self

    def __exit__(self, *exc):
        _current_streams.pop()
        return False

    def use(self):
        _current_streams[:] = [self]
        return self

    def synchronize(self):
        if self._graph is not None:
            raise CUDARuntimeError("cudaErrorStreamCaptureUnsupported: synchronizing a capturing stream")

    def wait_event(self, event):
        pass

    def record(self, event=None):
        event = event or Event()
        event.record(self)
        return event

    @property
    def done(self):
        return True

    def begin_capture(self, mode=None):
        if self.ptr == 0:
            raise CUDARuntimeError("cudaErrorStreamCaptureUnsupported: capture on the legacy default stream")
        if self._graph is not None:
            raise CUDARuntimeError("cudaErrorIllegalState: the stream is already capturing")
        self._graph = []

    def end_capture(self):
        if self._graph is None:
            raise CUDARuntimeError("cudaErrorIllegalState: the stream is not capturing")
        graph, self._graph = Graph(self._graph), None
        return graph

    def is_capturing(self):
        return self._graph is not None

    def __repr__(self):
        return f"<Stream {self.ptr:#x} (pyfast emulator)>"


Stream.null = Stream(null=True)
_current_streams = []


def get_current_stream(device_id=None):
    return _current_streams[-1] if _current_streams else Stream.null


def _stream_of(handle):
    return _streams.get(int(handle))


class Graph:
    """What a stream capture recorded; launch() runs it again, in order."""

    def __init__(self, calls):
        self._calls = list(calls)

    def launch(self, stream=None):
        for call in self._calls:
            call()

    def upload(self, stream=None):
        pass


class Event:
    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self._time = None

    def record(self, stream=None):
        self._time = time.perf_counter()

    def synchronize(self):
        _not_while_capturing("Event.synchronize")

    def query(self):
        return True

    @property
    def done(self):
        return True


def get_elapsed_time(start_event, end_event):
    """Milliseconds of host time between the two records (the emulator's kernels run on the CPU)."""
    return (end_event._time - start_event._time) * 1e3


def _get_device_properties(device):
    Device(device)
    return _ext().properties()


def _mem_get_info():
    total = int(_ext().properties()["totalGlobalMem"])
    return total - int(_ext().allocated_bytes()), total


def _device_synchronize():
    _not_while_capturing("cudaDeviceSynchronize")


class _MemoryPool:
    """No pool: every allocation is exact host memory, freed when its last array goes."""

    def free_all_blocks(self, stream=None):
        pass

    def used_bytes(self):
        return int(_ext().allocated_bytes())

    def total_bytes(self):
        return int(_ext().allocated_bytes())

    def set_limit(self, size=None, fraction=None):
        pass


_pool = _MemoryPool()


def get_default_memory_pool():
    return _pool


def get_default_pinned_memory_pool():
    return _pool


cuda = _namespace(
    "cupy.cuda",
    runtime=_namespace("cupy.cuda.runtime", CUDARuntimeError=CUDARuntimeError, getDevice=lambda: 0,
                       setDevice=Device, getDeviceCount=lambda: 1, getDeviceProperties=_get_device_properties,
                       memGetInfo=_mem_get_info, deviceSynchronize=_device_synchronize,
                       runtimeGetVersion=lambda: 13000, driverGetVersion=lambda: 13000),
    memory=_namespace("cupy.cuda.memory", OutOfMemoryError=OutOfMemoryError, MemoryPointer=MemoryPointer),
    Stream=Stream,
    Event=Event,
    Device=Device,
    Graph=Graph,
    get_current_stream=get_current_stream,
    get_elapsed_time=get_elapsed_time,
    set_allocator=lambda allocator=None: None,
    set_pinned_memory_allocator=lambda allocator=None: None,
    is_available=lambda: True,
)
