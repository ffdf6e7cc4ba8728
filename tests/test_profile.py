"""The profiler's counters (csrc/emu/profile.cpp, pyfast.profile) against counts worked out by
hand for the probe kernels of csrc/emu/profile_probe.cu (each probe's comment gives its
arithmetic), sampling and its scaling, the source lines, a real kernel of each kind, and the
command. They need the profiled emulated build: `bash tests/emulated.sh profile` builds it and
runs this file on it; elsewhere they skip."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pyfast

ROOT = Path(__file__).resolve().parent.parent
PROBES = ROOT / "csrc" / "emu" / "profile_probe.cu"

if not (pyfast.emulator.enabled() and pyfast.emulator.loader.extension().emulator.profiled()):
    pytest.skip("needs the profiled emulated build (bash tests/emulated.sh profile)", allow_module_level=True)

from pyfast import profile  # noqa: E402
from pyfast.profile import report  # noqa: E402

emu = pyfast.emulator.loader.extension().emulator


def probe(name, **options):
    """The one launch of probe `name`: its Launch record."""
    profile.start(**options)
    try:
        assert emu.run_profile_probe(name) == "cudaSuccess"
    finally:
        launches = profile.stop()
    assert len(launches) == 1
    return launches[0]


def site(launch, space, op):
    (found,) = [s for s in launch.sites if s.space == space and s.op == op]
    return found


def line_of(pattern):
    """kernel file:line of the first line of profile_probe.cu holding `pattern`."""
    for number, text in enumerate(PROBES.read_text().splitlines(), 1):
        if pattern in text:
            return f"csrc/emu/profile_probe.cu:{number}"
    raise AssertionError(pattern)


# probe -> (requests, sectors, ideal sectors) of its global load: two warps unless said.
GLOBAL_LOADS = {
    "copy_coalesced": (2, 8, 8),      # 32 floats in a row: 4 sectors a request
    "copy_stride2": (2, 16, 8),       # every other float: 8
    "copy_stride32": (2, 64, 8),      # a float per 128 bytes: 32
    "copy_offset": (2, 10, 8),        # 4 bytes off a sector's start: 5
    "copy_float4": (2, 32, 32),       # 16 bytes a lane: 16, the ideal
    "odd_lanes": (2, 8, 4),           # 16 lanes in one 128-byte line: 4 sectors, their bytes fill 2
    "divergent_loop": (31, 76, 76),   # one warp, lanes k+1..31 at step k: sum of 4 - (k+1)//8
}


@pytest.mark.parametrize("name", list(GLOBAL_LOADS))
def test_global_requests_and_sectors_are_the_hand_counts(name):
    launch = probe(name)
    load = site(launch, "global", "load")
    assert (load.requests, load.sectors, load.ideal_sectors) == GLOBAL_LOADS[name]
    assert load.location == line_of({"copy_float4": "reinterpret_cast<float4*>(out)[threadIdx.x]",
                                     "divergent_loop": "sum += in[32 * k",
                                     "odd_lanes": "if (threadIdx.x % 2 == 1)"}.get(name, f"void {name}("))
    assert launch.sampled_blocks == launch.blocks == 1 and launch.scale == 1


def test_sectors_per_request_as_nsight_says_them():
    assert site(probe("copy_coalesced"), "global", "load").sectors_per_request == 4
    assert site(probe("copy_stride32"), "global", "load").sectors_per_request == 32
    assert site(probe("copy_offset"), "global", "load").sectors_per_request == 5
    assert site(probe("copy_float4"), "global", "load").sectors_per_request == 16
    odd = site(probe("odd_lanes"), "global", "load")
    assert (odd.sectors_per_request, odd.ideal_per_request, odd.lanes) == (4, 2, 32)


def test_divergent_loop_lanes():
    load = site(probe("divergent_loop"), "global", "load")
    assert load.lanes == sum(range(32))  # lane l active in l of the warp's 31 requests


@pytest.mark.parametrize("name, read_wavefronts", [("transpose", 32 * 32), ("transpose_padded", 32)])
def test_shared_bank_conflicts_of_a_transpose(name, read_wavefronts):
    """32 read requests (8 warps x 4 rows): a column of an unpadded 32 x 32 tile is one bank (32
    wavefronts a request, 31 of them conflicts); padded, 32 banks (1). The row stores: 1 each."""
    launch = probe(name)
    load, store = site(launch, "shared", "load"), site(launch, "shared", "store")
    assert (store.requests, store.wavefronts, store.ideal_wavefronts) == (32, 32, 32)
    assert (load.requests, load.wavefronts, load.ideal_wavefronts) == (32, read_wavefronts, 32)
    assert load.bank_conflicts == read_wavefronts - 32
    assert launch.barriers == 8  # one per warp
    assert launch.unique_read_bytes == launch.unique_write_bytes == 4096
    assert launch.static_shared == 32 * (32 + (name == "transpose_padded")) * 4


def test_atomics_are_one_request_per_warp_and_not_a_load_and_store():
    launch = probe("atomics")
    assert {(s.space, s.op) for s in launch.sites} == {("global", "atomic")}
    atomic = site(launch, "global", "atomic")
    assert (atomic.requests, atomic.lanes, atomic.sectors) == (2, 64, 2)
    assert launch.unique_read_bytes == launch.unique_write_bytes == 32


def test_barriers_are_counted_per_warp():
    assert probe("barriers").barriers == 6  # three barriers, two warps


def test_unique_bytes_are_the_compulsory_traffic():
    launch = probe("copy_stride2")  # reads 64 floats 8 bytes apart: 512 bytes span, all sectors hit
    assert (launch.unique_read_bytes, launch.unique_write_bytes) == (512, 256)
    launch = probe("copy_stride32")  # 32 floats 128 bytes apart, read twice: 32 sectors once
    assert launch.unique_read_bytes == 32 * 32


def test_sampled_blocks_stand_for_the_launch():
    whole = probe("blocks8")
    sampled = probe("blocks8", sample_blocks=2)  # every 4th block, and the last: 0, 4, 7
    assert (whole.sampled_blocks, sampled.sampled_blocks, sampled.blocks) == (8, 3, 8)
    assert sampled.scale == pytest.approx(8 / 3)
    for field in ("requests", "sectors", "ideal_sectors"):
        assert sampled.total(field, "global", "load") == pytest.approx(whole.total(field, "global", "load"))
    assert sampled.unique_read_bytes == whole.unique_read_bytes == 1024  # every block ran
    only = probe("blocks8", sample_blocks=2, run_sampled_only=True)
    # 3 blocks of 128 bytes ran, scaled to 8: the whole 1024 (the 4 KB array bounds the estimate).
    assert only.run_blocks == 3 and only.unique_estimated and only.unique_read_bytes == 1024


def test_bad_sampling_is_refused():
    with pytest.raises(ValueError, match="sample_blocks"):
        profile.start(sample_blocks=-1)
    with pytest.raises(ValueError, match="run_sampled_only"):
        profile.start(run_sampled_only=True)


def test_a_real_kernel_float4_elementwise_and_its_unique_bytes():
    import cupy

    from pyfast import ops

    x = cupy.asarray(np.random.default_rng(0).standard_normal(64 * 1000, dtype=np.float32))
    y, (launch,) = profile.record(ops.relu, x)
    np.testing.assert_array_equal(y.get(), np.maximum(x.get(), 0))  # the profiled build computes right
    load, store = site(launch, "global", "load"), site(launch, "global", "store")
    assert load.bytes == store.bytes == 16 and load.sectors_per_request == store.sectors_per_request == 16
    assert launch.unique_read_bytes == launch.unique_write_bytes == x.nbytes
    assert load.location.startswith("kernels/elementwise/elementwise.cu:")


def test_pytorch_cpu_tensors_are_counted_as_device_memory():
    """pyfast.torch on the emulator: a CPU tensor's storage stands in for device memory, so the
    same kernel on the same data counts the same bytes whether the data came from CuPy or PyTorch."""
    torch = pytest.importorskip("torch")
    import cupy

    import pyfast.torch as pt
    from pyfast import ops

    data = np.random.default_rng(0).standard_normal(64 * 1000, dtype=np.float32)
    _, (from_cupy,) = profile.record(ops.relu, cupy.asarray(data))
    _, (from_torch,) = profile.record(pt.relu, torch.tensor(data))  # PyTorch's allocator: 64-byte aligned
    for launch in (from_cupy, from_torch):
        assert launch.unique_read_bytes == launch.unique_write_bytes == data.nbytes
    assert [(s.requests, s.sectors) for s in from_torch.sites] == [(s.requests, s.sectors) for s in from_cupy.sites]


def test_the_tiled_gemm_transposing_stores_conflict_two_ways():
    """The finding of the issue's prototype, on the real kernel: A's tile is stored transposed
    with a 2-way bank conflict; the inner loop's shared loads are conflict-free."""
    import cupy

    from pyfast import ops

    a = cupy.asarray(np.random.default_rng(0).standard_normal((256, 256), dtype=np.float32))
    _, launches = profile.record(ops.matmul, a, a, sample_blocks=4)
    (launch,) = [l for l in launches if "tiled_gemm" in l.kernel]
    stores = [s for s in launch.sites if s.space == "shared" and s.op == "store"]
    loads = [s for s in launch.sites if s.space == "shared" and s.op == "load"]
    assert any(s.wavefronts == 2 * s.ideal_wavefronts for s in stores)
    assert all(s.wavefronts == s.ideal_wavefronts for s in loads)
    assert all(s.location.startswith("kernels/") for s in launch.sites)
    assert "tiled_gemm.cuh" in report.worst_lines(launches)


def test_the_command_profiles_a_snippet(tmp_path):
    code = ("import pyfast, cupy\nfrom pyfast import ops\n"
            "x = cupy.ones((64, 1, 28, 28), cupy.float32)\n"
            "ops.max_pool2d(ops.conv2d(x, cupy.ones((8, 1, 3, 3), cupy.float32), padding=1), 2, return_indices=True)\n")
    result = subprocess.run([sys.executable, "-m", "pyfast.profile", "-c", code], capture_output=True, text=True,
                            timeout=600, cwd=tmp_path, env=dict(os.environ))
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"^# 2 launches on the profiled emulator", result.stdout, re.M), result.stdout
    assert "max_pool2d" in result.stdout and "# worst lines" in result.stdout


def _sass_or_skip():
    from pyfast.profile import sass

    try:
        sass.tools()
    except RuntimeError as error:
        pytest.skip(str(error))
    return sass


def test_workers_compiling_the_same_source_at_once_share_one_cache_entry(tmp_path, monkeypatch):
    """pytest -n runs tests in several processes: two that compile one source into the SASS cache
    at the same moment must both get the whole text (CI once failed on a worker removing the
    other's half-written files)."""
    import concurrent.futures

    sass = _sass_or_skip()
    monkeypatch.setattr(sass, "CACHE", str(tmp_path))
    source = os.path.join(sass.ROOT, "kernels", "data", "data.cu")
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: sass._compiled(source, "90"), range(4)))
    facts = sass.parse_ptxas(results[0][0])
    assert facts and all(sass.parse_ptxas(log) == facts and text == results[0][1] for log, text in results)
    assert ".text." in results[0][1]
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".ptxas", ".sass"]  # no temporary left


@pytest.mark.parametrize("version", ["simple", "tiled"])
def test_instruction_counts_give_every_fma_once(version):
    """SASS basic blocks x the emulator's counts: a 256^3 product issues exactly 256^3 / 32 warp
    FFMAs, whether nvcc unrolled the loop (simple: by 4 and in variants) or the source did (tiled)."""
    import cupy

    from pyfast import ops

    sass = _sass_or_skip()
    a = cupy.ones((256, 256), cupy.float32)
    _, launches = profile.record(ops.matmul, a, a, version=version, plan=(-1, 1), sample_blocks=4)
    (launch,) = launches
    kernel = sass.for_launch(launch)
    assert kernel is not None and kernel.registers > 0
    mix = sass.dynamic_instructions(launch, kernel)
    assert mix["ffma"] == pytest.approx(256 ** 3 / 32, rel=0.01)
    assert mix["memory"] > 0 and sum(mix.values()) > mix["ffma"]


def test_the_command_models_a_card(tmp_path):
    _sass_or_skip()
    code = "import pyfast, cupy\nfrom pyfast import ops\nops.relu(cupy.ones(1 << 16, cupy.float32))\n"
    result = subprocess.run([sys.executable, "-m", "pyfast.profile", "--card", "H200", "-c", code],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path, env=dict(os.environ))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "modelled (pyfast-model-1, H200)" in result.stdout and "not a measurement" in result.stdout
    assert re.search(r"\b(dram|issue|shared)\s*$", result.stdout.splitlines()[3]), result.stdout
