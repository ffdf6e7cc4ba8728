"""conv2d version "tiled" (kernels/conv2d/conv2d_tiled.cu).

CPU: the launcher's plans (from the compiled module) checked for coverage and limits, and the
kernels' index math emulated in NumPy block by block (tile origins, halos, channel chunks,
the flipped weights of the input gradient, row tasks, slices and row groups of the weight
gradient), each result against the float64 reference; unwritten outputs stay NaN.
GPU: every configuration of every pass against the reference at the shape-class boundaries,
the fused ReLU and bias gradient, bit-for-bit repeatability, and the per-pass choice."""

import math

import numpy as np
import pytest

from conftest import randn
from pyfast import _checks, ops, reference
from pyfast.testing import assert_close, reduction_atol

try:  # the launchers' planning is host code, the same in the CUDA and the emulated module
    import pyfast._C as C
except ImportError:
    C = pytest.importorskip("pyfast._C_emu", reason="no compiled module is built")

# (x shape, w shape, padding): both CNN layers, the 5x5 1->20 layer, C = 1, 3, 4, 5, K not a
# multiple of any tile (1, 3, 17, 20), odd H and W, batch 1, padding 0 / 1 / 2 / R - 1.
SHAPES = [
    ((2, 1, 28, 28), (32, 1, 3, 3), 1),
    ((2, 32, 14, 14), (64, 32, 3, 3), 1),
    ((2, 1, 28, 28), (20, 1, 5, 5), 0),
    ((1, 3, 7, 9), (17, 3, 5, 5), 2),
    ((3, 4, 9, 7), (3, 4, 3, 3), 0),
    ((1, 5, 11, 13), (1, 5, 3, 3), 2),
    ((2, 3, 5, 6), (5, 3, 5, 5), 4),
    ((1, 9, 17, 30), (12, 9, 3, 3), 1),
]
PASSES = {**{name: code for code, name in enumerate(_checks.CONV2D_PASSES)}, "forward_pool": 3}


def geometry(x_shape, w_shape, padding):
    g = _checks.conv2d_dims(x_shape, w_shape, 1, padding, 1)
    return g, [g["n"], g["c"], g["h"], g["w"], g["k"], g["r"], g["s"], g["p"], g["q"], *g["stride"],
               *g["padding"], *g["dilation"]]


def plan(geo, pass_name, config, sms):
    got = C.conv2d_tiled_plan(geo, PASSES[pass_name], config, sms)
    assert got, f"no plan for {pass_name} config {config}"
    return got


def emulate_forward_shaped(inp, weight, bias, kout, hout, wout, pad, r, flipped, relu, p, py=1):
    """conv_tiled_kernel block by block. `weight` as the kernel reads it: OIHW (kout x cin x R x
    R), or with `flipped` the (cin x kout x R x R) forward weight, read at flat tap RS-1-rs.
    py = 2: the pooling kernel's tiles (row groups of two rows)."""
    px, kt, tx, ty, kg, cb, tiles_w, tiles_h, _, _ = p
    ty *= py
    n_images, cin, hin, win = inp.shape
    kb, in_h, in_w = kg * kt, ty + r - 1, tx * px + r - 1
    flat = weight.reshape(weight.shape[0], weight.shape[1], r * r)
    out = np.full((n_images, kout, hout, wout), np.nan)
    for n in range(n_images):
        for tile in range(tiles_w * tiles_h):
            oy0, ox0 = tile // tiles_w * ty, tile % tiles_w * tx * px
            for k0 in range(0, kout, kb):
                acc = np.zeros((kb, ty, tx * px))
                for c0 in range(0, cin, cb):
                    in_s = np.zeros((cb, in_h, in_w))
                    w_s = np.zeros((cb, r * r, kb))
                    for ci in range(min(cb, cin - c0)):
                        for y in range(in_h):
                            gi = oy0 - pad[0] + y
                            if 0 <= gi < hin:
                                for x in range(in_w):
                                    gj = ox0 - pad[1] + x
                                    if 0 <= gj < win:
                                        in_s[ci, y, x] = inp[n, c0 + ci, gi, gj]
                        for kk in range(min(kb, kout - k0)):
                            ko, c = k0 + kk, c0 + ci
                            for rs in range(r * r):
                                w_s[ci, rs, kk] = flat[c, ko, r * r - 1 - rs] if flipped else flat[ko, c, rs]
                    for ci in range(cb):
                        for rr in range(r):
                            for s in range(r):
                                acc += w_s[ci, rr * r + s][:, None, None] * in_s[ci, rr:rr + ty, s:s + tx * px][None]
                for kk in range(min(kb, kout - k0)):
                    for row in range(ty):
                        oy = oy0 + row
                        if oy >= hout:
                            continue
                        for col in range(tx * px):
                            if ox0 + col < wout:
                                v = acc[kk, row, col] + (bias[k0 + kk] if bias is not None else 0.0)
                                out[n, k0 + kk, oy, ox0 + col] = max(v, 0.0) if relu else v
    return out


def emulate_wgrad(dy, x, r, pad, p):
    """conv_wgrad_tiled_kernel and the slice sum: slices of row tasks, channel / k blocks,
    chunks staged as the kernel stages them, row groups taking interleaved tasks."""
    kt, pxw, kg, cb, rg, chunk, slices, per_slice, qp, ld, _, _ = p
    n_images, c_in, h, w = x.shape
    _, k_out, p_out, q_out = dy.shape
    kb, tasks = kg * kt, n_images * p_out
    partial = np.full((slices, k_out, c_in, r, r), np.nan)
    partial_b = np.full((slices, k_out), np.nan)
    for z in range(slices):
        lo, hi = z * per_slice, min(z * per_slice + per_slice, tasks)
        for c0 in range(0, c_in, cb):
            for k0 in range(0, k_out, kb):
                acc = np.zeros((rg, kb, cb, r, r))
                acc_b = np.zeros((rg, kb))
                for t0 in range(lo, hi, chunk):
                    dy_s = np.zeros((kb, chunk, qp))
                    x_s = np.zeros((cb, chunk, r, ld))
                    for task in range(chunk):
                        tk = t0 + task
                        if tk >= hi:
                            continue
                        n, pp = divmod(tk, p_out)
                        kn = min(kb, k_out - k0)
                        dy_s[:kn, task, :q_out] = dy[n, k0:k0 + kn, pp, :]
                        for cc in range(min(cb, c_in - c0)):
                            for rr in range(r):
                                i = pp - pad[0] + rr
                                if 0 <= i < h:
                                    for jj in range(ld):
                                        if 0 <= jj - pad[1] < w:
                                            x_s[cc, task, rr, jj] = x[n, c0 + cc, i, jj - pad[1]]
                    for task in range(chunk):
                        group = task % rg
                        for rr in range(r):
                            for s in range(r):
                                acc[group, :, :, rr, s] += dy_s[:, task, :] @ x_s[:, task, rr, s:s + qp].T
                        acc_b[group] += dy_s[:, task, :].sum(axis=1)
                total, total_b = acc.sum(axis=0), acc_b.sum(axis=0)
                kn, cn = min(kb, k_out - k0), min(cb, c_in - c0)
                partial[z, k0:k0 + kn, c0:c0 + cn] = total[:kn, :cn]
                if c0 == 0:
                    partial_b[z, k0:k0 + kn] = total_b[:kn]
    return partial.sum(axis=0), partial_b.sum(axis=0)


def test_python_and_kernel_agree_on_what_tiled_covers():
    cases = [((2, 3, 8, 8), (4, 3, k, k), stride, pad, dil) for k in (1, 2, 3, 5, 7) for stride in (1, 2)
             for pad in (0, 1, 2, 4) for dil in (1, 2)]
    cases += [((1, 1, 4, 300), (1, 1, 3, 3), 1, 1, 1), ((1, 1, 4, 256), (1, 1, 3, 3), 1, 1, 1),
              ((1, 2, 9, 9), (3, 2, 3, 5), 1, 1, 1)]
    tiled = ops.CONV2D_VERSIONS.index("tiled")
    covered = 0
    for x_shape, w_shape, stride, pad, dil in cases:
        try:
            g = _checks.conv2d_dims(x_shape, w_shape, stride, pad, dil)
        except ValueError:
            continue
        geo = [g["n"], g["c"], g["h"], g["w"], g["k"], g["r"], g["s"], g["p"], g["q"], *g["stride"],
               *g["padding"], *g["dilation"]]
        assert _checks.conv2d_fits(g, tiled) == C.conv2d_tiled_fits(geo), (x_shape, w_shape, stride, pad, dil)
        covered += C.conv2d_tiled_fits(geo)
    assert covered >= 8
    for pass_name in _checks.CONV2D_PASSES:
        assert C.conv2d_config_count(PASSES[pass_name]) == _checks.CONV2D_TILED_CONFIGS[pass_name]
    _, geo = geometry((2, 3, 8, 8), (4, 3, 3, 3), 1)
    pooling = tuple(config for config in range(_checks.CONV2D_TILED_CONFIGS["forward"])
                    if C.conv2d_tiled_plan(geo, PASSES["forward_pool"], config, 132))
    assert pooling == _checks.CONV2D_TILED_POOL_CONFIGS


# Geometries whose plans once did not exist though the class took them: a 5x5 layer of 512
# output channels on a small image (forward) and of 512 input channels (input gradient), a
# weight gradient with 64 output channels on rows of 130 and of 256 pixels.
UNPLANNED_ONCE = [((1, 4, 7, 7), (512, 4, 5, 5), 0), ((1, 512, 7, 7), (4, 512, 5, 5), 0),
                  ((1, 4, 3, 132), (64, 4, 3, 3), 0), ((2, 16, 5, 256), (64, 16, 3, 3), 1)]


def test_every_geometry_the_class_takes_has_a_plan_for_every_pass_and_configuration():
    """The class (conv2d_tiled_fits: stride 1, dilation 1, 3x3 / 5x5, padding below the kernel,
    Q <= 256) and the planner agree over a grid of channels, widths and kernel sizes: a version
    is in a pass's class exactly when its launcher can plan it."""
    checked = 0
    for r in (3, 5):
        for pad in (0, r // 2, r - 1):
            for k in (1, 8, 64, 100, 512, 1024):
                for c in (0, 1, 16, 128, 1024):
                    for w in (1, 5, 28, 130, 256 + r - 1 - 2 * pad):
                        for h in (1, 7):
                            g, geo = geometry((2, c, h, w), (k, c, r, r), pad) if h + 2 * pad >= r and \
                                w + 2 * pad >= r else (None, None)
                            if g is None or not C.conv2d_tiled_fits(geo):
                                continue
                            passes = [("forward", range(-1, 9)), ("backward_input", range(-1, 9)),
                                      ("backward_weight", range(-1, 4))]
                            if g["p"] >= 2 and g["q"] >= 2:
                                passes.append(("forward_pool", [-1, *_checks.CONV2D_TILED_POOL_CONFIGS]))
                            for pass_name, configs in passes:
                                for config in configs:
                                    assert C.conv2d_tiled_plan(geo, PASSES[pass_name], config, 132), \
                                        (pass_name, config, geo)
                                    checked += 1
    assert checked > 30000


def test_both_backends_refuse_a_pass_without_a_plan():
    # The weight gradient of 8192 -> 8192 channels would need more than 65535 blocks along y.
    g, geo = geometry((1, 8192, 3, 30), (8192, 8192, 3, 3), 0)
    assert C.conv2d_tiled_fits(geo) and not C.conv2d_tiled_plan(geo, PASSES["backward_weight"], -1, 132)
    assert C.conv2d_tiled_plan(geo, PASSES["forward"], -1, 132)
    assert not _checks.conv2d_fits(g, ops.CONV2D_VERSIONS.index("tiled"), "backward_weight")
    with pytest.raises(ValueError, match="version: 'tiled' has no launch plan for the backward_weight"):
        _checks.conv2d_plan(g, "backward_weight", "tiled", None)
    from conftest import fake

    for conv_backward_weight, array in ((reference.conv2d_backward_weight, np.zeros), (ops.conv2d_backward_weight,
                                                                                      None)):
        dy = array((1, 8192, 1, 28), np.float32) if array else fake(1, 8192, 1, 28)
        x = array((1, 8192, 3, 30), np.float32) if array else fake(1, 8192, 3, 30)
        with pytest.raises(ValueError, match="has no launch plan"):
            conv_backward_weight(dy, x, (8192, 8192, 3, 3), version="tiled")


def test_an_input_without_channels_has_plans():
    # C = 0 used to divide by zero in the planners (SIGFPE): the forward is then the bias alone.
    _, geo = geometry((2, 0, 5, 5), (3, 0, 3, 3), 1)
    for pass_name in PASSES:
        assert C.conv2d_tiled_plan(geo, PASSES[pass_name], -1, 132), pass_name


@pytest.mark.parametrize("version", [*_checks.CONV2D_VERSIONS, None])
def test_an_input_without_channels_is_the_bias_on_both_backends(rng, version):
    x, w, b = np.empty((2, 0, 5, 5), np.float32), np.empty((3, 0, 3, 3), np.float32), randn(rng, 3)
    dy = randn(rng, 2, 3, 5, 5)
    y = reference.conv2d(x, w, b, padding=1, version=version)
    np.testing.assert_array_equal(y, np.broadcast_to(b[None, :, None, None], (2, 3, 5, 5)))
    assert reference.conv2d_backward_input(dy, w, x.shape, padding=1, version=version).shape == x.shape
    dw, db = reference.conv2d_backward_weight(dy, x, w.shape, padding=1, bias=True, version=version)
    assert dw.shape == w.shape
    assert_close(db, dy.astype(np.float64).sum(axis=(0, 2, 3)), atol=1e-5)


@pytest.mark.parametrize("sms", [1, 132])
@pytest.mark.parametrize("x_shape,w_shape,padding", SHAPES + UNPLANNED_ONCE + [
    ((1024, 1, 28, 28), (32, 1, 3, 3), 1), ((1024, 32, 14, 14), (64, 32, 3, 3), 1),
    ((128, 128, 28, 28), (128, 128, 3, 3), 1)])
def test_plans_cover_the_output_within_the_limits(x_shape, w_shape, padding, sms):
    g, geo = geometry(x_shape, w_shape, padding)
    for pass_name in ("forward", "backward_input"):
        hout, wout, kout = (g["p"], g["q"], g["k"]) if pass_name == "forward" else (g["h"], g["w"], g["c"])
        for config in range(C.conv2d_config_count(PASSES[pass_name])):
            px, kt, tx, ty, kg, cb, tiles_w, tiles_h, threads, smem = plan(geo, pass_name, config, sms)
            assert tiles_w * tx * px >= wout and (tiles_w - 1) * tx * px < wout
            assert tiles_h * ty >= hout and (tiles_h - 1) * ty < hout
            assert 32 <= threads <= 256 and threads % 32 == 0 and threads >= tx * ty * kg
            assert smem <= 48 * 1024 and 1 <= cb
            assert math.ceil(kout / (kg * kt)) <= 65535
    for config in range(C.conv2d_config_count(PASSES["backward_weight"])):
        kt, pxw, kg, cb, rg, chunk, slices, per_slice, qp, ld, threads, smem = plan(geo, "backward_weight", config,
                                                                                   sms)
        assert (slices - 1) * per_slice < g["n"] * g["p"] <= slices * per_slice
        assert qp % pxw == 0 and qp >= g["q"] and ld == qp + g["s"] - 1
        assert rg <= chunk and threads <= 512 and smem <= 48 * 1024
        workspace = C.conv2d_workspace_size(geo, ops.CONV2D_VERSIONS.index("tiled"), PASSES["backward_weight"],
                                            config)
        assert workspace == 0 or workspace >= g["k"] * (g["c"] * g["r"] * g["s"] + 1)


@pytest.mark.parametrize("x_shape,w_shape,padding", SHAPES)
def test_forward_and_input_gradient_index_math_against_reference(rng, x_shape, w_shape, padding):
    g, geo = geometry(x_shape, w_shape, padding)
    x, w, b = randn(rng, *x_shape), randn(rng, *w_shape), randn(rng, w_shape[0])
    dy = randn(rng, g["n"], g["k"], g["p"], g["q"])
    r, pad = g["r"], g["padding"]
    y_ref = reference.conv2d(x, w, b, padding=padding, activation="relu")
    dx_ref = reference.conv2d_backward_input(dy, w, x_shape, padding=padding)
    configs = range(C.conv2d_config_count(0)) if g["n"] * g["h"] * g["w"] <= 400 else (0, 3, 4)
    for config in configs:
        y = emulate_forward_shaped(x.astype(np.float64), w.astype(np.float64), b, g["k"], g["p"], g["q"], pad, r,
                                   False, True, plan(geo, "forward", config, 132))
        assert_close(y, y_ref, atol=1e-4, name=f"y config {config}")
        dx = emulate_forward_shaped(dy.astype(np.float64), w.astype(np.float64), None, g["c"], g["h"], g["w"],
                                    (r - 1 - pad[0], r - 1 - pad[1]), r, True, False,
                                    plan(geo, "backward_input", config, 132))
        assert_close(dx, dx_ref, atol=1e-4, name=f"dx config {config}")


def emulate_pool(conv_out, relu):
    """The pooling epilogue: each 2x2 window of the emulated output, PyTorch's scan."""
    n, k, h, w = conv_out.shape
    y = np.full((n, k, h // 2, w // 2), np.nan)
    idx = np.full(y.shape, -1, np.int64)
    for index in np.ndindex(*y.shape):
        b, c, pr, pq = index
        best, best_index = -np.inf, (2 * pr) * w + 2 * pq
        for dy in range(2):
            for dx in range(2):
                value = conv_out[b, c, 2 * pr + dy, 2 * pq + dx]
                value = max(value, 0.0) if relu and not np.isnan(value) else value
                if value > best or np.isnan(value):
                    best, best_index = value, (2 * pr + dy) * w + 2 * pq + dx
        y[index], idx[index] = best, best_index
    return y, idx


@pytest.mark.parametrize("x_shape,w_shape,padding", [shape for shape in SHAPES if shape[0][2] + 2 * shape[2] > 4])
def test_pooled_forward_index_math_against_reference(rng, x_shape, w_shape, padding):
    g, geo = geometry(x_shape, w_shape, padding)
    x, w, b = randn(rng, *x_shape), randn(rng, *w_shape), randn(rng, w_shape[0])
    y_ref, idx_ref = reference.conv2d_max_pool2d(x, w, b, padding=padding, activation="relu")
    for config in _checks.CONV2D_TILED_POOL_CONFIGS:
        conv_out = emulate_forward_shaped(x.astype(np.float64), w.astype(np.float64), b, g["k"], g["p"], g["q"],
                                          g["padding"], g["r"], False, False, plan(geo, "forward_pool", config, 132),
                                          py=2)
        y, idx = emulate_pool(conv_out.astype(np.float32).astype(np.float64), True)
        assert_close(y, y_ref, atol=1e-4, name=f"pooled config {config}")
        assert (idx >= 0).all()  # every window computed
        # Winners may differ only where two values of a window tie within rounding.
        chosen = np.take_along_axis(conv_out.reshape(*conv_out.shape[:2], -1), idx.reshape(*idx.shape[:2], -1),
                                    axis=2).reshape(idx.shape)
        assert_close(np.maximum(chosen, 0), y_ref, atol=1e-4, name=f"winners config {config}")


@pytest.mark.parametrize("sms", [1, 132])
@pytest.mark.parametrize("x_shape,w_shape,padding", SHAPES)
def test_weight_gradient_index_math_against_reference(rng, x_shape, w_shape, padding, sms):
    g, geo = geometry(x_shape, w_shape, padding)
    x = randn(rng, *x_shape)
    dy = randn(rng, g["n"], g["k"], g["p"], g["q"])
    dw_ref, db_ref = reference.conv2d_backward_weight(dy, x, w_shape, padding=padding, bias=True)
    for config in range(C.conv2d_config_count(2)):
        dw, db = emulate_wgrad(dy.astype(np.float64), x.astype(np.float64), g["r"], g["padding"],
                               plan(geo, "backward_weight", config, sms))
        assert_close(dw, dw_ref, atol=1e-4, name=f"dw config {config}")
        assert_close(db, db_ref, atol=1e-4, name=f"db config {config}")


def test_reference_fused_relu_and_bias_gradient(rng):
    x, w, b = randn(rng, 2, 3, 6, 7), randn(rng, 4, 3, 3, 3), randn(rng, 4)
    y = reference.conv2d(x, w, b, padding=1)
    assert_close(reference.conv2d(x, w, b, padding=1, activation="relu"), np.maximum(y, 0), atol=0)
    x[0, 0, 0, 0] = np.nan
    assert np.isnan(reference.conv2d(x, w, b, padding=1, activation="relu")[0, :, 0, 0]).all()
    dy = randn(rng, *y.shape)
    dw, db = reference.conv2d_backward_weight(dy, x, w.shape, padding=1, bias=True)
    assert_close(db, reference.bias_grad(dy), atol=1e-5)
    assert dw.shape == w.shape


@pytest.mark.parametrize("call,error,match", [
    (lambda m, a: m.conv2d(a(1, 2, 9, 9), a(3, 2, 3, 3), stride=2, version="tiled"), ValueError,
     r"version: 'tiled' needs stride 1"),
    (lambda m, a: m.conv2d(a(1, 2, 9, 9), a(3, 2, 3, 3), dilation=2, version="tiled"), ValueError, "dilation"),
    (lambda m, a: m.conv2d(a(1, 2, 9, 9), a(3, 2, 1, 1), version="tiled"), ValueError, "3x3 or 5x5"),
    (lambda m, a: m.conv2d(a(1, 2, 9, 9), a(3, 2, 3, 3), padding=3, version="tiled"), ValueError,
     "padding below the kernel size"),
    (lambda m, a: m.conv2d(a(1, 2, 9, 9), a(3, 2, 3, 3), version="tiled", config=9), ValueError,
     r"config: the tiled forward has configurations 0\.\.8, got 9"),
    (lambda m, a: m.conv2d_backward_weight(a(1, 3, 9, 9), a(1, 2, 9, 9), (3, 2, 3, 3), padding=1, version="tiled",
                                           config=4), ValueError, r"configurations 0\.\.3"),
    (lambda m, a: m.conv2d(a(1, 2, 9, 9), a(3, 2, 3, 3), version="tiled", config=-1), ValueError, "config: expected"),
    (lambda m, a: m.conv2d(a(1, 2, 9, 9), a(3, 2, 3, 3), version="tiled", config=1.0), TypeError, "config: expected"),
    (lambda m, a: m.conv2d(a(1, 2, 9, 9), a(3, 2, 3, 3), version="implicit", config=0), ValueError,
     "config: only version 'tiled'"),
    (lambda m, a: m.conv2d(a(1, 2, 9, 9), a(3, 2, 3, 3), config=0), ValueError, "config: a configuration needs"),
    (lambda m, a: m.conv2d(a(1, 2, 9, 9), a(3, 2, 3, 3), version="fast"), ValueError, "version: expected one of"),
    (lambda m, a: m.conv2d(a(1, 2, 9, 9), a(3, 2, 3, 3), activation="gelu"), ValueError,
     "activation: expected None or 'relu'"),
    (lambda m, a: m.conv2d_backward_input(a(1, 3, 4, 4), a(3, 2, 3, 3), (1, 2, 9, 9), stride=2, version="tiled"),
     ValueError, "version: 'tiled'"),
    (lambda m, a: m.conv2d_backward_weight(a(1, 3, 9, 9), a(1, 2, 9, 9), (3, 2, 3, 3), padding=1, bias=1),
     TypeError, "bias"),
    (lambda m, a: m.conv2d_backward_weight(a(1, 3, 9, 9), a(1, 2, 9, 9), (3, 2, 3, 3), padding=1, out_bias=a(3)),
     ValueError, "out_bias: given without bias=True"),
    (lambda m, a: m.conv2d_max_pool2d(a(1, 2, 3, 3), a(3, 2, 3, 3)), ValueError,
     r"x: the convolution's output 1x1 is smaller than the 2x2 pooling window"),
    (lambda m, a: m.conv2d_max_pool2d(a(1, 2, 9, 9), a(3, 2, 3, 3), padding=1, version="tiled", config=3), ValueError,
     r"config: the tiled pooled forward has configurations \[0, 1, 2, 4, 5, 8\], got 3"),
    (lambda m, a: m.conv2d_max_pool2d(a(1, 2, 9, 9), a(3, 2, 3, 3), activation="tanh"), ValueError, "activation"),
])
def test_bad_new_options_fail_the_same_on_both_backends(call, error, match):
    from conftest import fake

    with pytest.raises(error, match=match):
        call(reference, lambda *shape: np.zeros(shape, np.float32))
    with pytest.raises(error, match=match):
        call(ops, fake)


# ======================================================================= GPU
GPU_SHAPES = SHAPES + UNPLANNED_ONCE + [((1, 1, 28, 28), (32, 1, 3, 3), 1), ((4, 64, 32, 32), (64, 64, 3, 3), 1),
                                        ((2, 128, 28, 28), (128, 128, 3, 3), 1), ((1, 1, 7, 300), (4, 1, 3, 3), 1)]


def _gpu_case(rng, x_shape, w_shape, padding):
    import cupy

    g, _ = geometry(x_shape, w_shape, padding)
    x, w, b = randn(rng, *x_shape), randn(rng, *w_shape), randn(rng, w_shape[0])
    dy = randn(rng, g["n"], g["k"], g["p"], g["q"])
    return g, (x, w, b, dy), tuple(cupy.asarray(a) for a in (x, w, b, dy))


def shape_id(case):
    """x4x64x32x32-w64x64x3x3-p1: a case's name that stays when cases are added (tests/emulated.sh
    leaves the largest out of the sanitized run by name)."""
    x_shape, w_shape, padding = case
    return f"x{'x'.join(map(str, x_shape))}-w{'x'.join(map(str, w_shape))}-p{padding}"


@pytest.mark.gpu
@pytest.mark.parametrize("x_shape,w_shape,padding", GPU_SHAPES, ids=[shape_id(c) for c in GPU_SHAPES])
def test_gpu_every_tiled_config_against_reference(rng, x_shape, w_shape, padding):
    import cupy

    g, (x, w, b, dy), (xg, wg, bg, dyg) = _gpu_case(rng, x_shape, w_shape, padding)
    if not _checks.conv2d_fits(g, ops.CONV2D_VERSIONS.index("tiled")):
        pytest.skip("outside the tiled version's class (Q > 256): checked by the bad-input tests")
    kwargs = dict(padding=padding, version="tiled")
    y_ref = reference.conv2d(x, w, b, padding=padding)
    dx_ref = reference.conv2d_backward_input(dy, w, x_shape, padding=padding)
    dw_ref, db_ref = reference.conv2d_backward_weight(dy, x, w_shape, padding=padding, bias=True)
    crs, krs, npq = g["c"] * g["r"] * g["s"], g["k"] * g["r"] * g["s"], g["n"] * g["p"] * g["q"]
    for config in range(_checks.CONV2D_TILED_CONFIGS["forward"]):
        for relu in (False, True):
            y = ops.conv2d(xg, wg, bg, activation="relu" if relu else None, config=config,
                           out=cupy.full(y_ref.shape, cupy.nan, cupy.float32), **kwargs)
            assert_close(y, np.maximum(y_ref, 0) if relu else y_ref, atol=reduction_atol(crs),
                         name=f"y config {config} relu {relu}")
        dx = ops.conv2d_backward_input(dyg, wg, x_shape, config=config,
                                       out=cupy.full(x_shape, cupy.nan, cupy.float32), **kwargs)
        assert_close(dx, dx_ref, atol=reduction_atol(krs), name=f"dx config {config}")
    for config in range(_checks.CONV2D_TILED_CONFIGS["backward_weight"]):
        dw, db = ops.conv2d_backward_weight(dyg, xg, w_shape, bias=True, config=config,
                                            out=cupy.full(w_shape, cupy.nan, cupy.float32),
                                            out_bias=cupy.full(w_shape[0], cupy.nan, cupy.float32), **kwargs)
        assert_close(dw, dw_ref, atol=reduction_atol(npq), name=f"dw config {config}")
        assert_close(db, db_ref, atol=reduction_atol(npq), name=f"db config {config}")


@pytest.mark.gpu
def test_gpu_a_measured_tiled_entry_is_not_used_where_it_cannot_launch(monkeypatch):
    from pyfast import _tuning

    tiled = ops.CONV2D_VERSIONS.index("tiled")
    monkeypatch.setattr(_tuning, "conv_lookup", lambda *args: (tiled, 0))  # a class entry measured elsewhere
    g = _checks.conv2d_dims((1, 8192, 3, 30), (8192, 8192, 3, 3), 1, 0, 1)  # no weight-gradient plan
    assert ops._conv_choice(g, "forward", 0) == (tiled, 0)
    assert ops._conv_choice(g, "backward_weight", 0)[0] != tiled


@pytest.mark.gpu
@pytest.mark.parametrize("version", [*_checks.CONV2D_VERSIONS, None])
def test_gpu_an_input_without_channels_is_the_bias(rng, version):
    import cupy

    x, w, b = cupy.empty((2, 0, 5, 5), cupy.float32), cupy.empty((3, 0, 3, 3), cupy.float32), randn(rng, 3)
    dy = randn(rng, 2, 3, 5, 5)
    y = ops.conv2d(x, w, cupy.asarray(b), padding=1, version=version, out=cupy.full((2, 3, 5, 5), cupy.nan,
                                                                                      cupy.float32))
    np.testing.assert_array_equal(y.get(), np.broadcast_to(b[None, :, None, None], (2, 3, 5, 5)))
    assert ops.conv2d_backward_input(cupy.asarray(dy), w, x.shape, padding=1, version=version).shape == x.shape
    dw, db = ops.conv2d_backward_weight(cupy.asarray(dy), x, w.shape, padding=1, bias=True, version=version)
    assert dw.shape == w.shape
    assert_close(db, dy.astype(np.float64).sum(axis=(0, 2, 3)), atol=1e-5)


@pytest.mark.gpu
def test_gpu_tiled_is_bitwise_repeatable_and_keeps_nan(rng):
    import cupy

    g, _, (xg, wg, bg, dyg) = _gpu_case(rng, (3, 32, 14, 14), (64, 32, 3, 3), 1)
    kwargs = dict(padding=1, version="tiled")
    runs = [(ops.conv2d(xg, wg, bg, **kwargs), ops.conv2d_backward_input(dyg, wg, xg.shape, **kwargs),
             *ops.conv2d_backward_weight(dyg, xg, wg.shape, bias=True, **kwargs)) for _ in range(3)]
    for later in runs[1:]:
        for first, again in zip(runs[0], later):
            assert cupy.array_equal(first, again)
    xg[0, 0, 5, 5] = cupy.nan
    y = ops.conv2d(xg, wg, bg, activation="relu", **kwargs)
    assert bool(cupy.isnan(y[0, :, 4:7, 4:7]).all()) and not bool(cupy.isnan(y[1:]).any())


@pytest.mark.gpu
def test_gpu_version_none_runs_the_chosen_plan(rng):
    """version=None gives the result of the plan conv2d_plan names, for every pass."""
    import cupy

    g, (x, w, b, dy), (xg, wg, bg, dyg) = _gpu_case(rng, (4, 32, 14, 14), (64, 32, 3, 3), 1)
    for pass_name in _checks.CONV2D_PASSES:
        version, config = ops.conv2d_plan(pass_name, xg.shape, wg.shape, padding=1)
        assert version in ops.CONV2D_VERSIONS and (config == -1 or version == "tiled")
    chosen = ops.conv2d_plan("forward", xg.shape, wg.shape, padding=1)
    explicit = dict(version=chosen[0], config=None if chosen[1] < 0 else chosen[1])
    assert cupy.array_equal(ops.conv2d(xg, wg, bg, padding=1), ops.conv2d(xg, wg, bg, padding=1, **explicit))
    dw, db = ops.conv2d_backward_weight(dyg, xg, wg.shape, padding=1, bias=True)
    assert_close(db, reference.bias_grad(dy), atol=reduction_atol(4 * 14 * 14))


def test_measured_table_is_read_per_card_and_pass(tmp_path, monkeypatch):
    from pyfast import _tuning

    g, _ = geometry((64, 32, 14, 14), (64, 32, 3, 3), 1)
    key = _tuning.conv_class_key(2, g)
    assert key == "p2-r3x3-st1x1-d1x1-n6-c5-k6-hw8"
    assert _tuning.conv_class_key(2, _checks.conv2d_dims((70, 30, 14, 14), (60, 30, 3, 3), 1, 1, 1)) == key
    table = tmp_path / "conv.json"
    table.write_text('{"format": 1, "cards": {"Card A": {"%s": {"plan": [3, 2]}}}}' % key)
    monkeypatch.setattr(_tuning, "CONV_TABLE_PATH", table)
    _tuning.clear_cache()
    try:
        assert _tuning.conv_lookup("Card A", 2, g) == (3, 2)
        assert _tuning.conv_lookup("Card A", 0, g) is None and _tuning.conv_lookup("Card B", 2, g) is None
    finally:
        monkeypatch.undo()
        _tuning.clear_cache()


def test_rule_without_a_table_follows_the_h100_measurements():
    g, _ = geometry((128, 32, 14, 14), (64, 32, 3, 3), 1)
    names = [ops.CONV2D_VERSIONS[ops._conv_rule(g, code)] for code in range(3)]
    assert names == ["implicit", "gemm", "implicit"]
    huge, _ = geometry((65536, 64, 56, 56), (64, 64, 3, 3), 1)  # gemm's im2col would be ~100 GB
    assert ops.CONV2D_VERSIONS[ops._conv_rule(huge, 1)] == "implicit"


def test_tuner_candidates_respect_the_shape_class():
    from benchmarks import tune_conv

    g, _ = geometry((8, 32, 14, 14), (64, 32, 3, 3), 1)
    got = list(tune_conv.candidates(g, "backward_weight"))
    assert ("gemm", None) in got and ("implicit", None) in got
    assert [c for v, c in got if v == "tiled"] == list(range(_checks.CONV2D_TILED_CONFIGS["backward_weight"]))
    strided = _checks.conv2d_dims((8, 32, 14, 14), (64, 32, 3, 3), 2, 1, 1)
    assert all(v != "tiled" for v, _ in tune_conv.candidates(strided, "forward"))


@pytest.mark.gpu
@pytest.mark.parametrize("x_shape,w_shape,padding", GPU_SHAPES[:8])
def test_gpu_pooled_forward_equals_conv_then_pool(rng, x_shape, w_shape, padding):
    """conv2d_max_pool2d: the tiled kernel's in-register pooling gives the bits of the tiled
    conv followed by max_pool2d (every pooling configuration), and the other versions' two-pass
    path those of their conv followed by the pool."""
    import cupy

    g, (x, w, b, _), (xg, wg, bg, _) = _gpu_case(rng, x_shape, w_shape, padding)
    if g["p"] < 2 or g["q"] < 2:
        pytest.skip("the convolution's output is smaller than the window (checked by the bad-input tests)")
    for version in ("tiled", "implicit", "direct"):
        conv = ops.conv2d(xg, wg, bg, padding=padding, version=version)
        y_steps, idx_steps = ops.max_pool2d(conv, 2, activation="relu", return_indices=True)
        configs = _checks.CONV2D_TILED_POOL_CONFIGS if version == "tiled" else (None,)
        for config in configs:
            shape = y_steps.shape
            y, idx = ops.conv2d_max_pool2d(xg, wg, bg, padding=padding, activation="relu", version=version,
                                           config=config, out=cupy.full(shape, cupy.nan, cupy.float32),
                                           out_indices=cupy.full(shape, -1, cupy.int64))
            assert cupy.array_equal(y, y_steps) and cupy.array_equal(idx, idx_steps), (version, config)
    y_ref, _ = reference.conv2d_max_pool2d(x, w, b, padding=padding, activation="relu")
    assert_close(y, y_ref, atol=reduction_atol(g["c"] * g["r"] * g["s"]))
