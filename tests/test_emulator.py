"""The CPU emulator (csrc/emu, pyfast.emulator): each diagnostic provoked by a tiny kernel of
csrc/emu/selftest.cu and caught with the line, block and thread it names; barriers, shuffles,
votes, atomics and shared-memory poisoning giving what a GPU gives, in index and random order;
the emulated card's settings. These need only the emulated extension (built by every install),
so they run in the plain CPU run. The CuPy stand-in's own rules run under PYFAST_EMULATE=1."""

import math
import re

import numpy as np
import pytest

import pyfast

pytestmark = pytest.mark.emulator  # all of it runs in tests/emulated.sh's sanitized and random-order passes

C = pytest.importorskip("pyfast._C_emu", reason="the emulated extension is not built")
emu = C.emulator
NAN_BITS = 0xFFFFFFFF


def _preset_named(name):
    for preset in emu.presets():
        emu.select_device(preset)
        if emu.properties()["name"] == name:
            return preset
    raise AssertionError(f"no preset is {name}")


@pytest.fixture(autouse=True)
def restore_the_card():
    """Each test leaves the card, its SM count and the order as it found them (a run may have set
    them through PYFAST_EMU_DEVICE, PYFAST_EMU_SM_COUNT, PYFAST_EMU_ORDER)."""
    order, props = emu.order(), emu.properties()
    yield
    emu.set_order(*order)
    emu.select_device(_preset_named(props["name"]))
    emu.set_sm_count(props["multiProcessorCount"])
    if pyfast.emulator.enabled():
        pyfast.emulator.configure()  # the ops' cached SM counts


def _line_of(pattern):
    """The line of csrc/emu/selftest.cu holding `pattern` (so the tests follow edits of the file)."""
    from pathlib import Path

    lines = (Path(__file__).resolve().parent.parent / "csrc" / "emu" / "selftest.cu").read_text().splitlines()
    matches = [i + 1 for i, line in enumerate(lines) if pattern in line]
    assert len(matches) >= 1, pattern
    return matches


# (self-test, CUDA error, what the message must say)
DIAGNOSTICS = [
    ("divergent_barrier", "cudaErrorLaunchFailure",
     r"divergent barrier: thread \(\d+,0,0\) waits at csrc/emu/selftest\.cu:\d+, thread \(\d+,0,0\) at "
     r"csrc/emu/selftest\.cu:\d+ \(block \([01],0,0\) of grid \(2,1,1\)"),
    ("barrier_after_exit", "cudaErrorLaunchFailure",
     r"__syncthreads reached by 40 threads after 24 of the block had exited \(thread \(40,0,0\) returned\)"),
    ("shuffle_names_exited_lane", "cudaErrorLaunchFailure", r"__shfl_xor_sync at csrc/emu/selftest\.cu:\d+.* names lanes? .*exited"),
    ("deadlock", "cudaErrorLaunchTimeout",
     r"deadlock: .*16 threads wait at __syncthreads .*lanes 0xffff0000 of warp 0 wait at "
     r"__shfl_xor_sync\(mask 0xffffffff\)"),
    ("divergent_shuffle", "cudaErrorLaunchFailure",
     r"divergent warp: lane \d+ .* reached __shfl_(down|xor)_sync\(mask 0xffffffff\) .* wait for it at "
     r"__shfl_(xor|down)_sync"),
    ("overlapping_masks", "cudaErrorLaunchFailure", r"divergent warp: lanes wait at collectives whose masks overlap"),
    ("mask_without_caller", "cudaErrorLaunchFailure", r"its mask 0x00000001 does not name the calling lane \d+"),
    ("source_outside_mask", "cudaErrorLaunchFailure", r"lane 0 reads lane 2, which is not in the mask 0x00000003"),
    ("shuffle_in_partial_warp", "cudaErrorLaunchFailure",
     r"names lanes 0xffff0000 that warp 1 of the block does not have"),
    ("misaligned_vector_load", "cudaErrorMisalignedAddress", r"not aligned to its size \(thread \(0,0,0\) at csrc/emu/"),
    ("null_load", "cudaErrorIllegalAddress", r"null pointer"),
    ("trap", "cudaErrorIllegalInstruction", r"__trap\(\)"),
    ("too_many_threads", "cudaErrorInvalidConfiguration", r"invalid configuration argument"),
    ("grid_y_too_large", "cudaErrorInvalidConfiguration", r"invalid configuration argument"),
    ("shared_over_default_limit", "cudaErrorInvalidValue", r"invalid argument"),
    ("shared_opt_in_over_card", "cudaErrorInvalidValue", r"invalid argument"),
]


@pytest.mark.parametrize("name, error, message", DIAGNOSTICS, ids=[d[0] for d in DIAGNOSTICS])
@pytest.mark.parametrize("order", ["index", "random"])
def test_each_diagnostic_is_caught(name, error, message, order):
    emu.set_order(order == "random", 7)
    got, description, _ = emu.run_selftest(name)
    assert got == error, description
    assert re.search(message, description), description


def test_diagnostics_name_the_line_of_the_offending_call():
    _, description, _ = emu.run_selftest("barrier_after_exit")
    line = _line_of("if (threadIdx.x >= 40) return;")[0] + 1
    assert f"csrc/emu/selftest.cu:{line}" in description
    _, description, _ = emu.run_selftest("divergent_barrier")
    first, second = [n + 1 for n in _line_of("if (threadIdx.x < 32) {")[:1]] + [_line_of("} else {")[0] + 1]
    assert f"selftest.cu:{first}" in description and f"selftest.cu:{second}" in description


def test_a_launch_after_a_diagnostic_runs_normally():
    assert emu.run_selftest("deadlock")[0] != "cudaSuccess"
    assert emu.run_selftest("collectives")[0] == "cudaSuccess"


@pytest.mark.parametrize("order", ["index", "random"])
def test_collectives_give_what_a_gpu_gives(order):
    emu.set_order(order == "random", 12345)
    status, description, values = emu.run_selftest("collectives")
    assert status == "cudaSuccess", description
    v = np.asarray(values)
    tid = np.arange(64)
    lane = tid % 32
    np.testing.assert_array_equal(v[0:64], tid ^ 5)
    np.testing.assert_array_equal(v[64:128], np.where(lane + 3 < 32, tid + 3, tid))
    np.testing.assert_array_equal(v[128:192], np.where(tid % 8 >= 2, tid - 2, tid))
    np.testing.assert_array_equal(v[192:256], tid // 16 * 16 + 7)
    np.testing.assert_array_equal(v[256:320], 10)
    np.testing.assert_array_equal(v[320:384], 1)  # any(lane 31) and not all(lane < 31)
    np.testing.assert_array_equal(v[384:448], sum(range(32)))
    np.testing.assert_array_equal(v[448:512], np.where(lane < 16, tid ^ 8, -1))
    assert v[512] == 64  # a global atomicAdd per thread
    assert v[513] == sum(range(64))  # shared atomicAdd
    assert v[514] == len(range(0, 64, 3))  # __syncthreads_count
    assert v[515] == 1 and v[516] == 1  # __syncthreads_and / _or
    np.testing.assert_array_equal(v[520:584], 8)  # __match_any_sync of lane % 4
    np.testing.assert_array_equal(v[584:648], 32)  # __activemask: every lane of a full warp


def test_half_and_bfloat16_storage_round_like_numpy_and_the_reference():
    status, description, values = emu.run_selftest("storage_conversions")
    assert status == "cudaSuccess", description
    v = np.asarray(values, np.float32)
    inputs, half, bf16 = v[:256], v[256:512], v[512:768]
    with np.errstate(over="ignore"):  # values past 65520 become inf, as they should
        np.testing.assert_array_equal(half, inputs.astype(np.float16).astype(np.float32))
    from pyfast import reference

    np.testing.assert_array_equal(bf16, reference.round_bf16(inputs))


def test_shared_memory_is_poisoned_before_every_block():
    status, _, values = emu.run_selftest("dynamic_shared_poisoned")
    assert status == "cudaSuccess"
    assert all(math.isnan(v) for v in values[:64])  # block 1 does not see block 0's writes
    status, _, values = emu.run_selftest("static_shared_poisoned")
    assert status == "cudaSuccess" and all(math.isnan(v) for v in values[:64])
    assert np.asarray(values[:1], np.float32).view(np.uint32)[0] == NAN_BITS


def test_dynamic_shared_memory_above_48_kb_needs_the_opt_in():
    assert emu.run_selftest("shared_over_default_limit")[0] == "cudaErrorInvalidValue"
    status, description, values = emu.run_selftest("shared_opt_in")
    assert status == "cudaSuccess", description
    assert all(math.isnan(v) for v in values[:32])


def test_cp_async_lands_at_the_wait_that_covers_it():
    status, description, values = emu.run_selftest("cp_async_wait_order")
    assert status == "cudaSuccess", description
    assert math.isnan(values[0]) and values[1] == 10.0 and values[2] == 14.0


SANITIZED = [
    ("shared_overrun", "address", "AddressSanitizer: heap-buffer-overflow"),
    ("index_overflow", "undefined", "runtime error: signed integer overflow"),
]


@pytest.mark.parametrize("name, sanitizer, report", SANITIZED, ids=[s[0] for s in SANITIZED])
def test_the_sanitized_build_catches_what_compute_sanitizer_would(name, sanitizer, report):
    """In a process of its own (the sanitizer ends it): the sanitized build (PYFAST_EMU_SANITIZE,
    loaded through PYFAST_EMU_MODULE as tests/emulated.sh sanitize does) must catch it."""
    import os
    import subprocess
    import sys

    if sanitizer not in emu.sanitizers().split(","):
        assert emu.run_selftest(name)[0] == "cudaErrorNotSupported"  # not run where nothing would catch it
        pytest.skip(f"needs the emulated build under -fsanitize={sanitizer} (tests/emulated.sh sanitize)")
    code = f"import pyfast, pyfast._C_emu as C; print(C.emulator.run_selftest({name!r})[:2])"
    env = dict(os.environ, UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1",
               ASAN_OPTIONS=os.environ.get("ASAN_OPTIONS", "") + ":detect_leaks=0:halt_on_error=1:log_path=stderr")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode != 0 and report in result.stderr, result.stderr[-2000:]
    assert "selftest.cu" in result.stderr  # the report names the kernel's line


def test_released_fiber_stacks_leave_no_poison_behind():
    """A fiber's bottom frames never return, so their red zones stay poisoned in AddressSanitizer's
    shadow; when a larger block makes the pool grow, the old range must be unpoisoned before it is
    unmapped, or whatever is mapped there next (a Python arena) reads as poisoned and an intercepted
    memcpy ends the process at a random later test (a CI run lost a worker so)."""
    if "address" not in emu.sanitizers().split(","):
        assert emu.regrow_stack_pool() == -1
        pytest.skip("needs the emulated build under -fsanitize=address (tests/emulated.sh sanitize)")
    assert emu.run_selftest("collectives")[0] == "cudaSuccess"  # fibers ran on the pool
    assert emu.regrow_stack_pool() == 0


def _run_pytest_emulated(tmp_path, module):
    """pytest in a process of its own with PYFAST_EMULATE=1 and PYFAST_EMU_MODULE=module, on one
    `gpu` test, without the sanitizer's runtime preloaded."""
    import os
    import subprocess
    import sys

    (tmp_path / "test_one.py").write_text("import pytest\n\n@pytest.mark.gpu\ndef test_one():\n    pass\n")
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "PYTEST_ADDOPTS", "PYTEST_XDIST_WORKER")}
    root = os.path.dirname(os.path.dirname(pyfast.__file__))  # this pyfast, installed or not
    env.update(PYFAST_EMULATE="1", PYFAST_EMU_MODULE=str(module),
               PYTHONPATH=os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")])))
    conftest = os.path.join(os.path.dirname(__file__), "conftest.py")
    (tmp_path / "conftest.py").write_text(open(conftest).read())
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)


def test_a_run_that_asked_for_the_emulator_and_lacks_it_fails_instead_of_skipping(tmp_path):
    """Skipping every GPU test when PYFAST_EMULATE=1 could not load the emulator would pass vacuously
    (as the sanitized CI step once did: its runtime was not preloaded)."""
    result = _run_pytest_emulated(tmp_path, tmp_path / "missing.so")
    assert result.returncode != 0, result.stdout[-2000:]
    output = result.stdout + result.stderr
    assert "PYFAST_EMULATE is set, but" in output and "missing.so: no such extension module" in output, output[-2000:]


def test_a_sanitized_build_without_its_runtime_preloaded_says_how_to_load_it(tmp_path):
    """Loaded without AddressSanitizer's runtime first, the sanitized build would end the process
    silently; the loader says what to preload instead (before loading it). The real sanitized
    build where this run has one, else a file that names the runtime as such a build does."""
    module = getattr(C, "__file__", "")
    if "address" not in emu.sanitizers().split(","):
        module = tmp_path / "_C_emu_asan.so"
        module.write_bytes(b"\x7fELF" + b"\0" * 60 + b"libasan.so.8\0")
    result = _run_pytest_emulated(tmp_path, module)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-2000:]
    assert "built with -fsanitize=address" in output and "LD_PRELOAD=" in output, output[-2000:]


def test_the_emulated_card_can_be_chosen():
    assert set(emu.presets()) >= {"h100", "h200", "a100", "v100"}
    emu.select_device("a100")
    props = emu.properties()
    assert props["name"] == b"NVIDIA A100-SXM4-80GB" and props["multiProcessorCount"] == 108
    assert (props["major"], props["minor"]) == (8, 0) and props["sharedMemPerBlockOptin"] == 166912
    emu.set_sm_count(3)
    assert emu.properties()["multiProcessorCount"] == 3
    with pytest.raises(ValueError, match="unknown preset"):
        emu.select_device("k80")
    emu.select_device("h100")
    assert emu.properties()["multiProcessorCount"] == 132


def test_device_memory_is_exact_aligned_and_counted():
    before = emu.allocated_bytes()
    allocation = emu.Allocation(1000)
    assert allocation.ptr % 256 == 0 and allocation.nbytes == 1000
    assert emu.allocated_bytes() == before + 1000
    view = np.frombuffer(allocation, np.uint8)
    assert view.size == 1000
    del view, allocation
    assert emu.allocated_bytes() == before
    with pytest.raises(MemoryError):
        emu.Allocation(1 << 60)


# --------------------------------------------------------------- under PYFAST_EMULATE=1
emulated = pytest.mark.skipif(not pyfast.emulator.enabled(), reason="runs under PYFAST_EMULATE=1")


@emulated
def test_the_stand_in_refuses_what_cupy_refuses():
    import cupy

    x = cupy.arange(6, dtype=cupy.float32)
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        np.asarray(x)
    with pytest.raises(TypeError, match="Unsupported type"):
        x + np.ones(6, np.float32)
    assert isinstance(x.sum(), cupy.ndarray) and x.sum().ndim == 0  # reductions stay on the device
    assert isinstance(x[2], cupy.ndarray) and float(x[2]) == 2.0
    assert type(x).__module__ == "cupy" and x.data.ptr % 256 == 0


@emulated
def test_dlpack_with_pytorch_cpu_tensors_shares_memory():
    torch = pytest.importorskip("torch")
    import cupy

    t = torch.arange(6, dtype=torch.float32)
    x = cupy.from_dlpack(t)
    x[1] = 10.0
    assert t[1].item() == 10.0 and x.data.ptr == t.data_ptr()
    back = torch.from_dlpack(x)
    back[2] = -1.0
    assert float(x[2]) == -1.0 and back.data_ptr() == x.data.ptr
    with pytest.raises(TypeError, match="not emulated"):
        cupy.from_dlpack(np.ones(3))  # only PyTorch tensors stand in for device memory


@emulated
def test_new_device_arrays_are_poisoned():
    import cupy

    assert np.isnan(cupy.empty(100, cupy.float32).get()).all()
    assert (cupy.empty(10, cupy.int64).get() == -1).all()


@emulated
def test_a_capture_records_launches_and_refuses_host_synchronization():
    import cupy

    from pyfast import ops

    a = cupy.asarray(np.arange(12, dtype=np.float32).reshape(3, 4))
    b = cupy.asarray(np.ones((4, 2), np.float32))
    out = cupy.zeros((3, 2), cupy.float32)
    total = cupy.zeros((), cupy.float64)
    accumulate = cupy.ElementwiseKernel("float32 value, float64 n", "float64 total", "total += (double)value * n",
                                        "test_accumulate")
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        ops.matmul(a, b, out=out)
        accumulate(out[0, 0], 2.0, total)
        with pytest.raises(cupy.cuda.runtime.CUDARuntimeError, match="capturing"):
            out.get()
        graph = stream.end_capture()
    assert (out.get() == 0).all() and float(total) == 0.0  # nothing ran while capturing
    graph.launch(stream=stream)
    graph.launch(stream=stream)
    np.testing.assert_array_equal(out.get(), a.get() @ b.get())
    assert float(total) == 2 * 2.0 * 6.0


@emulated
def test_the_benchmarks_refuse_to_time_the_emulator():
    import cupy

    from benchmarks import harness

    with pytest.raises(RuntimeError, match="CPU emulator"):
        harness.time_gpu(lambda: None, [()])
    assert isinstance(cupy.zeros(1), cupy.ndarray)


@emulated
def test_configure_changes_the_sm_count_the_ops_read():
    from pyfast import _C, ops

    pyfast.emulator.configure(sm_count=1)
    assert ops._sm_count(0) == 1
    assert _C.matmul_rule_splits(1, 64, 128, 3136, ops._sm_count(0)) == 1
    pyfast.emulator.configure(device="h100")
    assert ops._sm_count(0) == 132


@emulated
@pytest.mark.parametrize("sms", [1, 16, 132])
@pytest.mark.parametrize("x_shape, w_shape", [((64, 1, 28, 28), (32, 1, 3, 3)),     # the CNN's conv1, b64
                                              ((64, 32, 14, 14), (64, 32, 3, 3)),   # conv2
                                              ((4, 32, 14, 14), (64, 32, 3, 3)),    # NPQ = 784: too short
                                              ((8, 256, 8, 8), (256, 256, 3, 3))])  # many tiles
def test_conv2d_weight_gradient_splits_k_by_matmuls_rule(sms, x_shape, w_shape):
    """One split-K rule: the implicit weight gradient, a K x CRS by NPQ product, takes the K slices
    matmul's rule gives that product (its workspace holds one partial dW per slice)."""
    from pyfast import _C, _checks, ops

    before = ops._sm_count(0)
    pyfast.emulator.configure(sm_count=sms)
    try:
        g = _checks.conv2d_dims(x_shape, w_shape, 1, 1, 1)
        m, n, k = g["k"], g["c"] * g["r"] * g["s"], g["n"] * g["p"] * g["q"]
        splits = _C.matmul_rule_splits(_checks.MATMUL_VERSIONS.index("tiled"), m, n, k, sms)
        floats = _C.conv2d_workspace_size(_checks.conv2d_geometry(g), _checks.CONV2D_VERSIONS.index("implicit"),
                                          _checks.CONV2D_PASSES.index("backward_weight"), -1)
        assert 4 * floats == _C.matmul_workspace_size(m, n, k, splits)
    finally:
        pyfast.emulator.configure(sm_count=before)


@pytest.mark.parametrize("setting, message", [
    ("PYFAST_EMU_ORDER=bogus", "PYFAST_EMU_ORDER='bogus': expected index (the default) or random"),
    ("PYFAST_EMU_SM_COUNT=abc", "PYFAST_EMU_SM_COUNT='abc': expected an integer >= 1"),
    ("PYFAST_EMU_SM_COUNT=0", "PYFAST_EMU_SM_COUNT='0': expected an integer >= 1"),
    ("PYFAST_EMU_SEED=-1", "PYFAST_EMU_SEED='-1': expected an integer >= 0"),
    ("PYFAST_EMU_STACK_KB=lots", "PYFAST_EMU_STACK_KB='lots': expected an integer >= 1"),
    ("PYFAST_EMU_DEVICE=h300", "PYFAST_EMU_DEVICE='h300': expected one of h100, h200, a100, v100"),
])
def test_a_setting_the_emulator_does_not_take_is_an_error_naming_it(setting, message):
    """Not ignored without a word: `import pyfast` under PYFAST_EMULATE=1 refuses it, in one line."""
    import os
    import subprocess
    import sys

    name, value = setting.split("=")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYFAST_EMU_")}
    env.update(PYFAST_EMULATE="1", **{name: value})
    result = subprocess.run([sys.executable, "-c", "import pyfast"], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == f"ValueError: {message}", result.stderr[-2000:]
    assert "pyfast emulator:" not in result.stderr  # said once: not also by the runtime when it loads
