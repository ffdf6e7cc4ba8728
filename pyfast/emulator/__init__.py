"""pyfast's kernels without a GPU: the CUDA sources of kernels/ compiled by the host compiler
against a small CUDA runtime (csrc/emu), run on the CPU.

Select it with ``PYFAST_EMULATE=1`` in the environment before ``import pyfast``. Then
``pyfast.is_available()`` is True, ``pyfast.ops`` run the real kernels on host memory through the
same argument checks, ``import cupy`` gives a NumPy-backed stand-in (pyfast.emulator.cupy), and
the trainer's ``cuda`` backend trains on it, CUDA graphs included (a capture records the
launches; a replay runs them again).

A launch runs synchronously: blocks one after another, each block's threads as fibers that
switch at barriers and warp collectives. It reports, as a launch error naming the source line,
block and thread, what a GPU reports only under compute-sanitizer or never: a barrier reached
from different lines, a barrier after some threads exited, a collective whose mask names an
exited lane or lanes at another collective, a deadlock, misaligned vector and null accesses;
shared memory is poisoned (NaN) before each block, new arrays before use. It cannot tell speed,
what only concurrent blocks do, the GPU's memory model, or the rounding of fast-math
intrinsics (the host's libm is used).

Environment (read once, at import):
  PYFAST_EMU_DEVICE    the card it reports: h100 (default), h200, a100, v100
  PYFAST_EMU_SM_COUNT  override its SM count (grid-sizing rules read it)
  PYFAST_EMU_ORDER     "random": threads and blocks in an order drawn from PYFAST_EMU_SEED
  PYFAST_EMU_MODULE    path of another build of the emulated extension (a sanitized one)
  PYFAST_EMU_STACK_KB  each thread's stack (default 128 KB, 512 KB under AddressSanitizer)
"""

from pyfast.emulator import loader


def enabled():
    """True when pyfast's GPU ops run on the emulator."""
    return loader.active()


def _controls():
    return loader.extension().emulator


def properties():
    """The emulated card's properties (as cupy.cuda.runtime.getDeviceProperties gives them)."""
    return _controls().properties()


def configure(*, device=None, sm_count=None, order=None, seed=0):
    """Change the emulated card or the scheduling order while running: `device` one of
    presets(), `sm_count` its SM count, `order` "index" or "random" (drawn from `seed`)."""
    controls = _controls()
    if device is not None:
        controls.select_device(device)
    if sm_count is not None:
        if int(sm_count) < 1:
            raise ValueError(f"sm_count: expected at least 1, got {sm_count}")
        controls.set_sm_count(int(sm_count))
    if order is not None:
        if order not in ("index", "random"):
            raise ValueError(f"order: expected 'index' or 'random', got {order!r}")
        controls.set_order(order == "random", int(seed))
    from pyfast import _device

    _device.forget_device_properties()  # the ops read the card once per device


def presets():
    return list(_controls().presets())


def order():
    """("index" or "random", seed)."""
    random, seed = _controls().order()
    return ("random" if random else "index"), seed


def run_selftest(name):
    """Runs one of selftests(): (CUDA error name, description with the diagnostic, values written)."""
    return _controls().run_selftest(name)


def selftests():
    return list(_controls().selftests())


def describe():
    """One line: the card, its SM count and the order, for test headers and logs."""
    p = properties()
    kind, seed = order()
    name = p["name"].decode() if isinstance(p["name"], bytes) else p["name"]
    return (f"{name} emulated on the CPU (pyfast emulator: {p['multiProcessorCount']} SMs, "
            f"{kind} order{f', seed {seed}' if kind == 'random' else ''})")
