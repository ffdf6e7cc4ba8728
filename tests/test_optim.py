"""Optimizer updates: the NumPy reference by hand (CPU), then the fused GPU kernels against it
and against torch.optim over 100 steps."""

import numpy as np
import pytest

from conftest import fake, randn
from pyfast import ops, reference
from pyfast.testing import assert_close

try:
    import cupy
except ImportError:
    cupy = None

try:
    import torch
except ImportError:
    torch = None


def f32(*values):
    return np.array(values, np.float32)


# ============================================================ CPU: the reference itself
def test_sgd_by_hand():
    p, g = f32(1.0, -2.0), f32(0.5, 1.0)
    reference.sgd_step([p], [g], lr=0.1)
    assert_close(p, [0.95, -2.1], atol=1e-7)
    p, v = f32(1.0), f32(0.0)
    for _ in range(2):  # buf: 0.5 then 0.9 * 0.5 + 0.5 = 0.95
        reference.sgd_step([p], [f32(0.5)], lr=0.1, momentum=0.9, velocity=[v])
    assert_close(v, [0.95], atol=1e-7)
    assert_close(p, [1.0 - 0.05 - 0.095], atol=1e-7)
    p, v = f32(1.0), f32(0.0)
    reference.sgd_step([p], [f32(0.5)], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1, velocity=[v])
    g = 0.5 + 0.1 * 1.0
    assert_close(p, [1.0 - 0.1 * (g + 0.9 * g)], atol=1e-7)


def test_adam_first_step_moves_each_weight_by_about_lr():
    p, g = f32(1.0, -1.0, 0.0), f32(3.0, -0.001, 0.0)
    m, v = np.zeros(3, np.float32), np.zeros(3, np.float32)
    reference.adam_step([p], [g], [m], [v], step=1, lr=0.01)
    # m_hat = g, v_hat = g^2: the update is lr * g / (|g| + eps).
    assert_close(p, [0.99, -1.0 + 0.01 * 0.001 / (0.001 + 1e-8), 0.0], atol=1e-7)
    assert_close(m, 0.1 * g, atol=1e-9)
    assert_close(v, 0.001 * g.astype(np.float64) ** 2, atol=1e-12, rtol=1e-6)


def test_adam_and_adamw_weight_decay_differ():
    coupled, decoupled = f32(2.0), f32(2.0)
    for p, flag in ((coupled, False), (decoupled, True)):
        reference.adam_step([p], [f32(0.1)], [f32(0.0)], [f32(0.0)], step=1, lr=0.1, weight_decay=0.5,
                            decoupled=flag)
    assert_close(decoupled, [2.0 * (1 - 0.05) - 0.1], atol=1e-6)  # decay, then a unit-size step
    assert_close(coupled, [2.0 - 0.1], atol=1e-6)  # the decay only changes the gradient's size


@pytest.mark.parametrize("call, error, message", [
    (lambda p: reference.sgd_step(p, p, lr=-1.0), ValueError, "lr: expected a finite value >= 0"),
    (lambda p: reference.sgd_step(p, p, lr=0.1, momentum=0.9), ValueError, "velocity: momentum > 0 needs"),
    (lambda p: reference.sgd_step(p, p, lr=0.1, nesterov=True), ValueError, "nesterov: Nesterov momentum needs"),
    (lambda p: reference.sgd_step(p, p[:1], lr=0.1), ValueError, "grads: expected 2 arrays"),
    (lambda p: reference.sgd_step(p[0], p, lr=0.1), TypeError, "params: expected a list of arrays"),
    (lambda p: reference.adam_step(p, p, p, p, step=0), ValueError, "step: expected an int >= 1"),
    (lambda p: reference.adam_step(p, p, p, p, step=1, betas=(0.9, 1.0)), ValueError, r"betas\[1\]"),
    (lambda p: reference.adam_step(p, p, p, p, step=1, eps=float("nan")), ValueError, "eps: expected"),
    (lambda p: reference.adam_step(p, [p[1], p[0]], p, p, step=1), ValueError, r"grads\[0\]: expected shape"),
])
def test_bad_optimizer_arguments(call, error, message):
    with pytest.raises(error, match=message):
        call([np.zeros(3, np.float32), np.zeros(4, np.float32)])


def test_gpu_optimizer_argument_checks_without_touching_memory():
    with pytest.raises(TypeError, match=r"grads\[1\]: expected dtype float32"):
        ops.sgd_step([fake(3), fake(4)], [fake(3), fake(4, typestr="<f8")], lr=0.1)
    with pytest.raises(ValueError, match=r"exp_avg_sq\[0\]: expected shape \(3,\), got \(4,\)"):
        ops.adam_step([fake(3)], [fake(3)], [fake(3)], [fake(4)], step=1)
    with pytest.raises(ValueError, match=r"params\[0\]: expected a C-contiguous"):
        ops.adam_step([fake(3, 2, strides=(4, 12))], [fake(3, 2)], [fake(3, 2)], [fake(3, 2)], step=1)


# ======================================================================= GPU
gpu = pytest.mark.gpu
# Mixed sizes: a scalar, a bias, the CNN's 3136 x 128 weight, and lengths that are not
# multiples of 4 or of the kernel's 4096-element chunks.
SHAPES = [(1,), (10,), (3136, 128), (7,), (1001,), (4097,), (32, 1, 3, 3)]


def make_tensors(rng, shapes, scale=1.0):
    return [randn(rng, *shape, scale=scale) for shape in shapes]


def to_gpu(arrays):
    return [cupy.asarray(a) for a in arrays]


@gpu
@pytest.mark.parametrize("momentum,nesterov,weight_decay", [(0.0, False, 0.0), (0.9, False, 0.0),
                                                            (0.9, True, 1e-2), (0.0, False, 1e-2)])
def test_sgd_steps_against_reference(rng, momentum, nesterov, weight_decay):
    params = make_tensors(rng, SHAPES)
    velocity = [np.zeros_like(p) for p in params]
    gpu_params, gpu_velocity = to_gpu(params), to_gpu(velocity)
    for _ in range(3):
        grads = make_tensors(rng, SHAPES)
        kwargs = dict(lr=0.05, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
        reference.sgd_step(params, grads, velocity=velocity if momentum else None, **kwargs)
        ops.sgd_step(gpu_params, to_gpu(grads), velocity=gpu_velocity if momentum else None, **kwargs)
        for got, expected in zip(gpu_params + gpu_velocity, params + velocity):
            assert_close(got, expected, atol=1e-6, rtol=1e-5)


@gpu
@pytest.mark.parametrize("decoupled,weight_decay", [(True, 0.0), (True, 0.01), (False, 0.01)])
def test_adam_steps_against_reference(rng, decoupled, weight_decay):
    params = make_tensors(rng, SHAPES)
    states = [[np.zeros_like(p) for p in params] for _ in range(2)]
    gpu_params, gpu_states = to_gpu(params), [to_gpu(s) for s in states]
    for step in range(1, 4):
        grads = make_tensors(rng, SHAPES, scale=0.1)
        kwargs = dict(step=step, lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=weight_decay,
                      decoupled=decoupled)
        reference.adam_step(params, grads, *states, **kwargs)
        ops.adam_step(gpu_params, to_gpu(grads), *gpu_states, **kwargs)
        for got, expected in zip(gpu_params + gpu_states[0] + gpu_states[1], params + states[0] + states[1]):
            assert_close(got, expected, atol=1e-6, rtol=1e-5)


@gpu
def test_many_tensors_and_misaligned_views(rng):
    """More tensors than one launch describes (48), some views starting off 16-byte alignment."""
    shapes = [(i % 9 + 1,) for i in range(130)] + [(5000,)]
    params = make_tensors(rng, shapes)
    grads = make_tensors(rng, shapes)
    states = [[np.zeros_like(p) for p in params] for _ in range(2)]

    def misaligned(a):
        view = cupy.empty(a.size + 1, cupy.float32)[1:]
        view[...] = cupy.asarray(a).ravel()
        return view.reshape(a.shape)

    gpu_params = [misaligned(p) if i % 2 else cupy.asarray(p) for i, p in enumerate(params)]
    gpu_states = [to_gpu(s) for s in states]
    ops.adam_step(gpu_params, to_gpu(grads), *gpu_states, step=1)
    reference.adam_step(params, grads, *states, step=1)
    for got, expected in zip(gpu_params, params):
        assert_close(got, expected, atol=1e-6, rtol=1e-5)


@gpu
def test_aliasing_and_missing_state_are_rejected(rng):
    p = cupy.asarray(randn(rng, 10))
    q = cupy.asarray(randn(rng, 10))
    with pytest.raises(ValueError, match=r"overlaps"):
        ops.sgd_step([p, p], [q, q.copy()], lr=0.1)
    with pytest.raises(ValueError, match=r"overlaps"):
        ops.adam_step([p], [p], [q], [q.copy()], step=1)
    with pytest.raises(ValueError, match="velocity: momentum > 0 needs"):
        ops.sgd_step([p], [q], lr=0.1, momentum=0.9)
    before = p.copy()
    ops.sgd_step([], [], lr=0.1)  # an empty list is a no-op
    ops.sgd_step([p], [q], lr=0.0)
    np.testing.assert_array_equal(p.get(), before.get())


def _torch_cuda():
    if torch is None or not torch.cuda.is_available():
        pytest.skip("needs PyTorch with CUDA")


@gpu
@pytest.mark.parametrize("name,kwargs", [
    ("adam", dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)),
    ("adam", dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-2)),
    ("adamw", dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2)),
    ("sgd", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    ("sgd", dict(lr=0.05)),
])
def test_matches_torch_optim_over_100_steps(rng, name, kwargs):
    _torch_cuda()
    params = make_tensors(rng, SHAPES)
    torch_params = [torch.tensor(p, device="cuda", requires_grad=True) for p in params]
    if name == "sgd":
        optimizer = torch.optim.SGD(torch_params, **kwargs, foreach=False)
    else:
        cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
        optimizer = cls(torch_params, **kwargs, fused=True)
    ours = to_gpu(params)
    states = [[cupy.zeros_like(p) for p in ours] for _ in range(2)]
    for step in range(1, 101):
        grads = make_tensors(rng, SHAPES, scale=0.1)
        for t, g in zip(torch_params, grads):
            t.grad = torch.tensor(g, device="cuda")
        optimizer.step()
        if name == "sgd":
            ops.sgd_step(ours, to_gpu(grads), velocity=states[0] if kwargs.get("momentum") else None, **kwargs)
        else:
            ops.adam_step(ours, to_gpu(grads), *states, step=step, decoupled=name == "adamw", **kwargs)
    for got, expected in zip(ours, torch_params):
        assert_close(got, expected.detach().cpu().numpy(), atol=1e-6, rtol=1e-5)
