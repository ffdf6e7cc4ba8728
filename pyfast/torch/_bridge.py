"""Tensors in and out of pyfast's kernels: the device and dtype rules, the same memory seen as a
CuPy array (DLPack, no copy), outputs from PyTorch's caching allocator, and launches on
PyTorch's current stream. Under ``PYFAST_EMULATE=1`` the kernels run on the CPU, so CPU tensors
take the place of CUDA tensors (the emulator's CuPy takes their memory as device memory)."""

import contextlib

import torch

from pyfast._device import require_gpu
from pyfast.emulator import loader

_STREAMS = {}  # (device, PyTorch stream handle) -> cupy.cuda.ExternalStream
_ALLOCATORS = {}  # device -> CuPy allocator drawing from PyTorch's caching allocator
# The tests set this: every output is filled with NaN (-1 for indices) before the kernel writes
# it, so an element it leaves unwritten shows.
poison_outputs = False


def emulated():
    return loader.active()


def device_type():
    """The device pyfast.torch's tensors live on: "cuda", or "cpu" under the emulator."""
    return "cpu" if emulated() else "cuda"


def check_dense(op, name, t):
    """TypeError naming `name` unless `t` is a dense (strided) torch.Tensor."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"pyfast.torch.{op}: {name}: expected a torch.Tensor, got {type(t).__module__}."
                        f"{type(t).__name__}")
    if t.layout != torch.strided:
        raise TypeError(f"pyfast.torch.{op}: {name}: expected a dense (strided) tensor, got layout {t.layout}")


def check_tensor(op, name, t, dtypes=(torch.float32,)):
    """TypeError / ValueError naming `name` unless `t` is a dense tensor of one of `dtypes` on
    pyfast's device (fake tensors of torch.compile included: only metadata is read)."""
    check_dense(op, name, t)
    if t.dtype not in dtypes:
        wanted = " or ".join(str(d) for d in dtypes)
        raise TypeError(f"pyfast.torch.{op}: {name}: expected dtype {wanted}, got {t.dtype}")
    if t.device.type != device_type():
        where = ("a CPU tensor (PYFAST_EMULATE=1 runs the kernels on the CPU)" if emulated()
                 else "a CUDA tensor (pyfast's kernels run on the GPU; on the CPU, PYFAST_EMULATE=1 emulates them)")
        raise ValueError(f"pyfast.torch.{op}: {name}: expected {where}, got a tensor on {t.device}")


def same_device(op, first_name, first, **others):
    for name, t in others.items():
        if t is not None and t.device != first.device:
            raise ValueError(f"pyfast.torch.{op}: {name}: is on {t.device} but {first_name} is on {first.device}")


def empty(like, shape, dtype=torch.float32):
    """A new output on `like`'s device, from PyTorch's caching allocator."""
    out = torch.empty(tuple(shape), dtype=dtype, device=like.device)
    if poison_outputs:
        out.fill_(float("nan") if dtype.is_floating_point else -1)
    return out


def array(t):
    """The CuPy array over `t`'s memory (None stays None). `t` must be contiguous."""
    if t is None:
        return None
    import cupy

    return cupy.from_dlpack(t.detach())


def tensor(a):
    """The tensor over a CuPy array's memory (results pyfast allocated itself: loss values)."""
    return torch.from_dlpack(a)


@contextlib.contextmanager
def launching(op, like):
    """The pyfast op runs inside: on `like`'s device, on PyTorch's current stream there, so
    PyTorch's queued work is ordered before it and later work after it, with no host wait
    (CUDA graphs captured by PyTorch record it like a native op)."""
    require_gpu(f"(pyfast.torch.{op})")
    if emulated():
        yield
        return
    import cupy

    device = like.device.index if like.device.index is not None else torch.cuda.current_device()
    handle = torch.cuda.current_stream(device).cuda_stream
    stream = _STREAMS.get((device, handle))
    if stream is None:
        stream = _STREAMS[(device, handle)] = cupy.cuda.ExternalStream(handle, device)
    with cupy.cuda.Device(device), stream, cupy.cuda.using_allocator(_allocator(device)):
        yield


def _allocator(device):
    """CuPy allocations (the ops' scratch, loss values) from PyTorch's caching allocator on its
    current stream: one pool for both, and memory a graph PyTorch captures owns."""
    allocate = _ALLOCATORS.get(device)
    if allocate is None:
        import cupy

        def allocate(size):
            block = torch.empty(size, dtype=torch.uint8, device=f"cuda:{device}")
            return cupy.cuda.MemoryPointer(cupy.cuda.UnownedMemory(block.data_ptr(), size, block, device), 0)

        _ALLOCATORS[device] = allocate
    return allocate


def capturing():
    """True while PyTorch captures a CUDA graph on the current stream (no host reads then)."""
    return not emulated() and torch.cuda.is_current_stream_capturing()
