"""The fused linear-regression run (linear_mse_sgd_fit): the reference twin against the
layer-by-layer NumPy training loop and closed-form gradients (CPU), its argument checks (CPU,
on fakes), and on a GPU the one-launch kernel against the reference, against the eager GPU
loop it replaces, and the linreg CLI's two GPU paths against each other."""

import numpy as np
import pytest
from conftest import fake, randn

from pyfast import data as datasets
from pyfast import nn, ops, reference, train
from pyfast.optim import SGD
from pyfast.testing import assert_close


def eager_run(backend, x, y, weight, bias, lr, epochs):
    """The layer-by-layer loop the fused run replaces (Linear, MSELoss, SGD)."""
    backend = nn.get_backend(backend)
    model = nn.Linear(x.shape[1], y.shape[1], backend=backend)
    model.weight[...] = backend.asarray(weight)
    model.bias[...] = backend.asarray(bias)
    loss, optimizer = nn.MSELoss(backend=backend), SGD(model, lr=lr)
    xd, yd = backend.asarray(x), backend.asarray(y)
    losses = []
    for _ in range(epochs):
        value, grad = loss(model.forward(xd), yd)
        model.backward(grad)
        optimizer.step()
        losses.append(float(value))
    return np.array(losses), backend.to_numpy(model.weight), backend.to_numpy(model.bias)


def problem(rng, n, f, o):
    x, y = randn(rng, n, f), randn(rng, n, o)
    return x, y, randn(rng, o, f, scale=0.3), randn(rng, o, scale=0.3)


# ------------------------------------------------------------------ CPU
@pytest.mark.parametrize("n,f,o", [(100, 2, 1), (7, 5, 3), (1, 1, 1)])
def test_reference_matches_the_layer_loop(rng, n, f, o):
    x, y, w, b = problem(rng, n, f, o)
    w_ref, b_ref = w.copy(), b.copy()
    losses = reference.linear_mse_sgd_fit(x, y, w_ref, b_ref, lr=0.05, epochs=50)
    eager_losses, eager_w, eager_b = eager_run("numpy", x, y, w, b, lr=0.05, epochs=50)
    assert losses.dtype == np.float32 and losses.shape == (50,)
    assert_close(losses, eager_losses, atol=1e-6, rtol=1e-5)
    assert_close(w_ref, eager_w, atol=1e-6, rtol=1e-5)
    assert_close(b_ref, eager_b, atol=1e-6, rtol=1e-5)


def fma32(a, b, c):
    """fmaf(a, b, c) for float32 values: a * b + c rounded once. The product is exact in float64;
    the float64 sum's own rounding error is recovered exactly (TwoSum), so a sum that rounds onto
    a float32 tie is moved toward the exact value before the one rounding to float32."""
    product, addend = np.float64(a) * np.float64(b), np.float64(c)
    total = product + addend
    virtual = total - product
    error = (product - (total - virtual)) + (addend - virtual)
    if error != 0 and np.float32(np.nextafter(total, np.inf)) != np.float32(np.nextafter(total, -np.inf)):
        total = np.nextafter(total, np.inf if error > 0 else -np.inf)  # on a float32 boundary: toward the exact sum
    return np.float32(total)


def test_fma32_rounds_once():
    one, eps = np.float32(1), np.float32(2.0 ** -23)
    # (1 + eps)(1 - eps) = 1 - eps^2: an fma keeps the -eps^2 that the rounded product loses.
    assert fma32(one + eps, one - eps, -one) == np.float32(-(2.0 ** -46))
    assert np.float32((one + eps) * (one - eps)) - one == 0
    # a * b = 2^-24 (1 + 4688 2^-46): 1 + a * b lies just above a float32 tie, so close that its
    # float64 sum rounds onto the tie, which rounding again to float32 would take down, to even.
    a, b = np.float32(1 + 2896 * 2.0 ** -23), np.float32((1 - 2895 * 2.0 ** -23) * 2.0 ** -24)
    assert np.float32(np.float64(a) * np.float64(b) + 1.0) == one
    assert fma32(a, b, one) == one + eps
    assert fma32(np.float32(2.0 ** -24), one, one) == one  # exactly on the tie: to even


def emulate_warp_fit(x, y, weight, bias, lr, epochs):
    """kernels/fused/fused.cu v1 in float32: lane l sums samples l, l + 32, ... in order, then the
    butterfly (offsets 16 .. 1) gives every lane the same sums and the same update."""
    f32 = np.float32
    n, f = x.shape
    w, b = weight[0].astype(f32).copy(), f32(bias[0])
    lanes = np.arange(32)
    losses = []
    for _ in range(epochs):
        g, gb, total = np.zeros((32, f), f32), np.zeros(32, f32), np.zeros(32, f32)
        for lane in lanes:
            for s in range(lane, n, 32):
                acc = f32(0)
                for j in range(f):
                    acc = fma32(x[s, j], w[j], acc)  # fmaf: one rounding of the product and sum
                r = f32(f32(acc + b) - y[s, 0])
                total[lane] = f32(total[lane] + f32(r * r))
                d = f32(f32(2.0 / n) * r)
                for j in range(f):
                    g[lane, j] = fma32(d, x[s, j], g[lane, j])
                gb[lane] = f32(gb[lane] + d)
        for offset in (16, 8, 4, 2, 1):
            total, gb, g = total + total[lanes ^ offset], gb + gb[lanes ^ offset], g + g[lanes ^ offset]
        losses.append(f32(total[0] * f32(1.0 / n)))
        w = (w - f32(lr) * g[0]).astype(f32)
        b = f32(b - f32(lr) * gb[0])
    return np.array(losses), w[None], np.array([b], f32)


def test_warp_kernel_order_of_sums_tracks_the_reference():
    """The one-warp kernel's summation order (emulated) against the float64-summed reference on
    the tutorial's problem: the tolerance of the GPU test holds for its rounding."""
    x, y = datasets.synthetic_regression(100, 2, seed=0)
    init = nn.Linear(2, 1, rng=np.random.default_rng(0), backend="numpy")
    w_ref, b_ref = init.weight.copy(), init.bias.copy()
    expected = reference.linear_mse_sgd_fit(x, y, w_ref, b_ref, lr=0.01, epochs=200)
    losses, w, b = emulate_warp_fit(x, y, init.weight, init.bias, 0.01, 200)
    assert_close(losses, expected, atol=1e-6, rtol=1e-5, name="losses")
    assert_close(w, w_ref, atol=1e-6, rtol=1e-5, name="weight")
    assert_close(b, b_ref, atol=1e-6, rtol=1e-5, name="bias")


def test_reference_first_step_is_the_closed_form_gradient(rng):
    x, y, w, b = problem(rng, 9, 4, 2)
    w1, b1 = w.copy(), b.copy()
    losses = reference.linear_mse_sgd_fit(x, y, w1, b1, lr=0.1, epochs=1)
    x64, y64, w64, b64 = (a.astype(np.float64) for a in (x, y, w, b))
    r = x64 @ w64.T + b64 - y64
    assert losses[0] == np.float32(np.mean(r**2))
    np.testing.assert_allclose(w1, w64 - 0.1 * (2 / r.size) * r.T @ x64, rtol=1e-6)
    np.testing.assert_allclose(b1, b64 - 0.1 * (2 / r.size) * r.sum(axis=0), rtol=1e-6)


def test_reference_zero_epochs_changes_nothing(rng):
    x, y, w, b = problem(rng, 5, 2, 1)
    w1, b1 = w.copy(), b.copy()
    assert reference.linear_mse_sgd_fit(x, y, w1, b1, lr=0.1, epochs=0).shape == (0,)
    assert (w1 == w).all() and (b1 == b).all()


GOOD = dict(x=(100, 2), y=(100, 1), weight=(1, 2), bias=(1,))


@pytest.mark.parametrize("arg,shape,match", [
    ("x", (100,), "x: expected a 2-D array"),
    ("y", (99, 1), r"y: expected shape \(100, 1\)"),
    ("weight", (2, 1), r"weight: expected shape \(1, 2\)"),
    ("bias", (2,), r"bias: expected shape \(1,\)"),
])
def test_shapes_are_checked(arg, shape, match):
    arrays = {name: fake(*s) for name, s in GOOD.items()}
    arrays[arg] = fake(*shape)
    with pytest.raises(ValueError, match=match):
        ops.linear_mse_sgd_fit(arrays["x"], arrays["y"], arrays["weight"], arrays["bias"], lr=0.01, epochs=10)


@pytest.mark.parametrize("kwargs,match", [
    (dict(lr=-1.0, epochs=10), "lr"), (dict(lr=float("nan"), epochs=10), "lr"), (dict(lr=float("inf"), epochs=1), "lr"),
    (dict(lr=0.1, epochs=-1), "epochs"), (dict(lr=0.1, epochs=2.5), "epochs"), (dict(lr=0.1, epochs=True), "epochs"),
])
def test_hyperparameters_are_checked(kwargs, match):
    arrays = [fake(*s) for s in GOOD.values()]
    with pytest.raises(ValueError, match=match):
        ops.linear_mse_sgd_fit(*arrays, **kwargs)
    host = [np.zeros(s, np.float32) for s in GOOD.values()]
    with pytest.raises(ValueError, match=match):
        reference.linear_mse_sgd_fit(*host, **kwargs)


def test_problems_too_large_for_one_block_are_refused():
    with pytest.raises(ValueError, match="exceed the fused fit's 12000"):
        ops.linear_mse_sgd_fit(fake(12000, 2), fake(12000, 1), fake(1, 2), fake(1), lr=0.01, epochs=1)
    with pytest.raises(TypeError, match="weight: expected dtype float32"):
        ops.linear_mse_sgd_fit(fake(10, 2), fake(10, 1), fake(1, 2, typestr="<f8"), fake(1), lr=0.01, epochs=1)


# ------------------------------------------------------------------ GPU
cupy = pytest.importorskip("cupy")


@pytest.mark.gpu
# v1 (one warp: o = 1, f <= 8, n <= 1024) and v0 (one block) on both sides of each bound.
@pytest.mark.parametrize("n,f,o", [(100, 2, 1), (1, 1, 1), (33, 8, 1), (1024, 3, 1), (1025, 3, 1), (50, 9, 1),
                                   (7, 5, 3), (1000, 8, 4), (300, 33, 2), (2900, 1, 4)])
def test_fused_run_matches_the_reference(rng, n, f, o):
    x, y, w, b = problem(rng, n, f, o)
    w_ref, b_ref = w.copy(), b.copy()
    expected = reference.linear_mse_sgd_fit(x, y, w_ref, b_ref, lr=0.01, epochs=300)
    wd, bd = cupy.asarray(w), cupy.asarray(b)
    out = cupy.full(300, cupy.nan, cupy.float32)
    got = ops.linear_mse_sgd_fit(cupy.asarray(x), cupy.asarray(y), wd, bd, lr=0.01, epochs=300, out_losses=out)
    assert got is out
    assert_close(got, expected, atol=1e-6, rtol=1e-4, name="losses")
    assert_close(wd, w_ref, atol=1e-5, rtol=1e-4, name="weight")
    assert_close(bd, b_ref, atol=1e-5, rtol=1e-4, name="bias")


@pytest.mark.gpu
def test_fused_run_matches_the_eager_gpu_loop(rng):
    # The tutorial's workload: the same float32 steps, so the two GPU paths agree closely.
    x, y = datasets.synthetic_regression(100, 2, seed=0)
    init = nn.Linear(2, 1, rng=np.random.default_rng(0), backend="numpy")
    eager_losses, eager_w, eager_b = eager_run("cuda", x, y, init.weight, init.bias, lr=0.01, epochs=1000)
    wd, bd = cupy.asarray(init.weight), cupy.asarray(init.bias)
    losses = ops.linear_mse_sgd_fit(cupy.asarray(x), cupy.asarray(y), wd, bd, lr=0.01, epochs=1000)
    assert_close(losses, eager_losses, atol=0, rtol=1e-5, name="losses")
    assert_close(wd, eager_w, atol=1e-6, rtol=1e-5, name="weight")
    assert_close(bd, eager_b, atol=1e-6, rtol=1e-5, name="bias")


@pytest.mark.gpu
def test_fused_run_repeats_bit_for_bit(rng):
    x, y, w, b = (cupy.asarray(a) for a in problem(rng, 500, 3, 2))
    runs = []
    for _ in range(2):
        wd, bd = w.copy(), b.copy()
        runs.append((ops.linear_mse_sgd_fit(x, y, wd, bd, lr=0.02, epochs=200), wd, bd))
    for first, second in zip(runs[0], runs[1]):
        assert (first == second).all()


@pytest.mark.gpu
@pytest.mark.trains
def test_linreg_cli_fused_and_eager_print_the_same(capsys):
    args = ["linreg", "--backend", "cuda"]
    _, fused_test = train.run_linreg(train.parser().parse_args(args))
    fused_lines = capsys.readouterr().out.splitlines()
    _, eager_test = train.run_linreg(train.parser().parse_args([*args, "--eager"]))
    eager_lines = capsys.readouterr().out.splitlines()
    assert len(fused_lines) == len(eager_lines) == 11  # Epoch 100 .. 1000, then the test loss
    for a, b in zip(fused_lines, eager_lines):
        assert a.split("=")[0] == b.split("=")[0] or a.split(":")[0] == b.split(":")[0]
        assert float(a.replace(":", "=").split("=")[-1]) == pytest.approx(float(b.replace(":", "=").split("=")[-1]),
                                                                          rel=1e-5)
    assert fused_test == pytest.approx(eager_test, rel=1e-5)
