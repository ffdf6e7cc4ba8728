"""The PTX wrappers of kernels/common/ptx.cuh, each run by one warp on given inputs (tests/kernels/ptx_probe.cu),
against plain products: on a GPU this holds the fragment layouts ptx.cuh documents against the
hardware; under the emulator, its implementation of those layouts (csrc/emu/ptx.cpp) against
the same documentation. Every layout: both mma shapes, ldmatrix x1 / x2 / x4, plain and .trans,
cp.async of every size with partial sources."""

import numpy as np
import pytest

from pyfast import reference

cupy = pytest.importorskip("cupy")
gpu = pytest.mark.gpu


def _launch(probe, *args):
    from pyfast import _C

    device, stream = cupy.cuda.runtime.getDevice(), cupy.cuda.get_current_stream().ptr
    try:
        getattr(_C, probe)(*args, device, stream)
    except RuntimeError as error:  # pyfast.CudaError
        if "cudaErrorNotSupported" in str(error):
            pytest.skip("needs sm_80 or newer (mma.sync, ldmatrix, cp.async)")
        raise


@gpu
@pytest.mark.parametrize("bf16", [False, True], ids=["m16n8k8-tf32", "m16n8k16-bf16"])
def test_mma_fragments_compute_a_plain_product(rng, bf16):
    k = 16 if bf16 else 8
    a = rng.standard_normal((16, k)).astype(np.float32)
    b = rng.standard_normal((k, 8)).astype(np.float32)
    c = rng.standard_normal((16, 8)).astype(np.float32)
    d = cupy.full((16, 8), cupy.nan, cupy.float32)
    ga, gb, gc = (cupy.asarray(x) for x in (a, b, c))
    _launch("_ptx_probe_mma", ga.data.ptr, gb.data.ptr, gc.data.ptr, d.data.ptr, bf16)
    rounding = reference.round_bf16 if bf16 else reference.round_tf32
    expected = rounding(a).astype(np.float64) @ rounding(b).astype(np.float64) + c
    # The operands' products are exact; only the float32 sum of k + 1 terms rounds.
    np.testing.assert_allclose(d.get(), expected, rtol=0, atol=1e-5 * (1 + np.abs(expected).max()))


@gpu
@pytest.mark.parametrize("trans", [False, True], ids=["plain", "trans"])
@pytest.mark.parametrize("matrices", [1, 2, 4])
def test_ldmatrix_hands_each_lane_its_fragment(matrices, trans):
    tiles = np.arange(matrices * 64, dtype=np.uint16).reshape(matrices, 8, 8) * 3 + 1
    out = cupy.zeros(32 * matrices, cupy.uint32)
    device_tiles = cupy.asarray(tiles)  # kept: the launch takes raw addresses
    _launch("_ptx_probe_ldmatrix", device_tiles.data.ptr, out.data.ptr, matrices, trans)
    lane = np.arange(32)
    row, column = lane // 4, 2 * (lane % 4)
    expected = np.empty((32, matrices), np.uint32)
    for m in range(matrices):
        tile = tiles[m].T if trans else tiles[m]  # .trans: the fragment of the transposed tile
        expected[:, m] = tile[row, column].astype(np.uint32) | (tile[row, column + 1].astype(np.uint32) << 16)
    np.testing.assert_array_equal(out.get().reshape(32, matrices), expected)


@gpu
@pytest.mark.parametrize("chunk", [4, 8, 16])
def test_cp_async_copies_and_zero_fills(chunk):
    src = np.arange(1, 17, dtype=np.float32)
    src_bytes = np.array([chunk, chunk // 2 if chunk > 4 else chunk, 0, chunk], np.int32)
    out = cupy.full(16, cupy.nan, cupy.float32)
    device_src, device_src_bytes = cupy.asarray(src), cupy.asarray(src_bytes)
    _launch("_ptx_probe_cp_async", device_src.data.ptr, device_src_bytes.data.ptr, out.data.ptr, chunk)
    floats = chunk // 4
    expected = np.full(16, np.nan, np.float32)
    for i in range(4):
        part = src[i * floats: (i + 1) * floats].copy()
        part[src_bytes[i] // 4:] = 0.0
        expected[i * floats: (i + 1) * floats] = part
    np.testing.assert_array_equal(out.get(), expected)
