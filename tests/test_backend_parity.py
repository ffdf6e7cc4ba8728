"""The backends run the same checks: each bad call below raises the same exception type with
the same message from pyfast.ops (on fake GPU arrays: the checks read only metadata, so this
runs on any machine, and no fake reaches a kernel) and from the NumPy backends, pyfast.reference
and pyfast.cpu (on NumPy arrays)."""

import re

import numpy as np
import pytest

from conftest import fake
from pyfast import cpu, ops, reference

INF, NAN = float("inf"), float("nan")


def _numpy(*shape, typestr="<f4"):
    dtype = np.dtype(typestr)
    if dtype.kind == "i":
        return np.zeros(shape, dtype)  # valid labels / indices
    return np.random.default_rng(0).standard_normal(shape).astype(dtype)


# Each case: (id, call(module, array factory)); every call is invalid.
CASES = [
    ("sgd lr string", lambda m, a: m.sgd_step([a(3)], [a(3)], lr="0.1")),
    ("sgd lr inf", lambda m, a: m.sgd_step([a(3)], [a(3)], lr=INF)),
    ("sgd lr nan", lambda m, a: m.sgd_step([a(3)], [a(3)], lr=NAN)),
    ("sgd lr negative", lambda m, a: m.sgd_step([a(3)], [a(3)], lr=-1)),
    ("sgd lr bool", lambda m, a: m.sgd_step([a(3)], [a(3)], lr=True)),
    ("sgd momentum inf", lambda m, a: m.sgd_step([a(3)], [a(3)], lr=0.1, momentum=INF, velocity=[a(3)])),
    ("sgd weight_decay string", lambda m, a: m.sgd_step([a(3)], [a(3)], lr=0.1, weight_decay="0")),
    ("sgd nesterov without momentum", lambda m, a: m.sgd_step([a(3)], [a(3)], lr=0.1, nesterov=True)),
    ("adam lr inf", lambda m, a: m.adam_step([a(3)], [a(3)], [a(3)], [a(3)], step=1, lr=INF)),
    ("adam betas strings", lambda m, a: m.adam_step([a(3)], [a(3)], [a(3)], [a(3)], step=1, betas=("0.9", "0.999"))),
    ("adam betas scalar", lambda m, a: m.adam_step([a(3)], [a(3)], [a(3)], [a(3)], step=1, betas=0.9)),
    ("adam beta 1", lambda m, a: m.adam_step([a(3)], [a(3)], [a(3)], [a(3)], step=1, betas=(0.9, 1.0))),
    ("adam eps inf", lambda m, a: m.adam_step([a(3)], [a(3)], [a(3)], [a(3)], step=1, eps=INF)),
    ("adam step bool", lambda m, a: m.adam_step([a(3)], [a(3)], [a(3)], [a(3)], step=True)),
    ("adam step float", lambda m, a: m.adam_step([a(3)], [a(3)], [a(3)], [a(3)], step=1.5)),
    ("fit lr inf", lambda m, a: m.linear_mse_sgd_fit(a(10, 2), a(10, 1), a(1, 2), a(1), lr=INF, epochs=3)),
    ("fit lr string", lambda m, a: m.linear_mse_sgd_fit(a(10, 2), a(10, 1), a(1, 2), a(1), lr="0.1", epochs=3)),
    ("fit epochs float", lambda m, a: m.linear_mse_sgd_fit(a(10, 2), a(10, 1), a(1, 2), a(1), lr=0.1, epochs=2.0)),
    ("conv dx x_shape float", lambda m, a: m.conv2d_backward_input(a(1, 3, 5, 5), a(3, 2, 3, 3), (1, 2, 5.7, 5),
                                                                   padding=1)),
    ("conv dx x_shape string", lambda m, a: m.conv2d_backward_input(a(1, 3, 5, 5), a(3, 2, 3, 3), "1255",
                                                                    padding=1)),
    ("conv dx x_shape rank", lambda m, a: m.conv2d_backward_input(a(1, 3, 5, 5), a(3, 2, 3, 3), (2, 5, 5),
                                                                  padding=1)),
    ("conv dx x_shape negative", lambda m, a: m.conv2d_backward_input(a(1, 3, 5, 5), a(3, 2, 3, 3), (1, 2, -5, 5),
                                                                      padding=1)),
    ("conv dw w_shape string", lambda m, a: m.conv2d_backward_weight(a(1, 3, 3, 3), a(1, 2, 5, 5), "3233")),
    ("conv dw w_shape float", lambda m, a: m.conv2d_backward_weight(a(1, 3, 3, 3), a(1, 2, 5, 5), (3, 2, 3, 3.0))),
    ("conv dw dy shape", lambda m, a: m.conv2d_backward_weight(a(1, 3, 5, 5), a(1, 2, 5, 5), (3, 2, 3, 3))),
    ("conv stride 0", lambda m, a: m.conv2d(a(1, 2, 5, 5), a(3, 2, 3, 3), stride=0)),
    ("conv dilation string", lambda m, a: m.conv2d(a(1, 2, 5, 5), a(3, 2, 3, 3), dilation="1")),
    ("conv kernel too big", lambda m, a: m.conv2d(a(1, 2, 5, 5), a(3, 2, 7, 7))),
    ("conv channels", lambda m, a: m.conv2d(a(1, 2, 5, 5), a(3, 4, 3, 3))),
    ("conv bias shape", lambda m, a: m.conv2d(a(1, 2, 5, 5), a(3, 2, 3, 3), a(4))),
    ("conv version", lambda m, a: m.conv2d(a(1, 2, 5, 5), a(3, 2, 3, 3), version="winograd")),
    ("max pool dx 2-D dy", lambda m, a: m.max_pool2d_backward(a(2, 2), a(2, 2, typestr="<i8"), (1, 2, 4, 4))),
    ("max pool dx indices shape", lambda m, a: m.max_pool2d_backward(a(1, 2, 2, 2), a(1, 2, 2, 1, typestr="<i8"),
                                                                     (1, 2, 4, 4))),
    ("max pool dx channels", lambda m, a: m.max_pool2d_backward(a(1, 2, 2, 2), a(1, 2, 2, 2, typestr="<i8"),
                                                                (1, 3, 4, 4))),
    ("max pool dx x_shape float", lambda m, a: m.max_pool2d_backward(a(1, 2, 2, 2), a(1, 2, 2, 2, typestr="<i8"),
                                                                     (1, 2, 4.0, 4))),
    ("max pool dx indices dtype", lambda m, a: m.max_pool2d_backward(a(1, 2, 2, 2), a(1, 2, 2, 2, typestr="<i4"),
                                                                     (1, 2, 4, 4))),
    ("max pool kernel 0", lambda m, a: m.max_pool2d(a(1, 2, 4, 4), 0, return_indices=True)),
    ("max pool padding", lambda m, a: m.max_pool2d(a(1, 2, 4, 4), 2, padding=2, return_indices=True)),
    ("avg pool too small", lambda m, a: m.avg_pool2d(a(1, 2, 4, 4), 5)),
    ("avg pool count_include_pad", lambda m, a: m.avg_pool2d(a(1, 2, 4, 4), 2, count_include_pad=1)),
    ("avg pool dx dy shape", lambda m, a: m.avg_pool2d_backward(a(1, 2, 3, 3), (1, 2, 4, 4), 2)),
    ("avg pool dx x_shape string", lambda m, a: m.avg_pool2d_backward(a(1, 2, 2, 2), "1244", 2)),
    ("matmul inner", lambda m, a: m.matmul(a(4, 3), a(4, 5))),
    ("matmul bias", lambda m, a: m.matmul(a(4, 3), a(3, 5), bias=a(4))),
    ("matmul activation", lambda m, a: m.matmul(a(4, 3), a(3, 5), activation="tanh")),
    ("matmul trans flag", lambda m, a: m.matmul(a(4, 3), a(3, 5), trans_a=1)),
    ("matmul precision", lambda m, a: m.matmul(a(4, 3), a(3, 5), precision="fp16")),
    ("matmul plan", lambda m, a: m.matmul(a(4, 3), a(3, 5), plan=(0, 0))),
    ("matmul dtype", lambda m, a: m.matmul(a(4, 3), a(3, 5, typestr="<f8"))),
    ("relu_backward shape", lambda m, a: m.relu_backward(a(2, 3), a(3, 2))),
    ("add_bias shape", lambda m, a: m.add_bias(a(2, 3, 4, 4), a(1, 3))),
    ("bias_grad rank", lambda m, a: m.bias_grad(a(7))),
    ("mse shape", lambda m, a: m.mse_loss(a(3, 2), a(2, 3))),
    ("mse reduction", lambda m, a: m.mse_loss(a(3), a(3), reduction="max")),
    ("cross entropy labels dtype", lambda m, a: m.softmax_cross_entropy(a(4, 10), a(4))),
    ("cross entropy labels shape", lambda m, a: m.softmax_cross_entropy(a(4, 10), a(5, typestr="<i8"))),
    ("cross entropy no classes", lambda m, a: m.softmax_cross_entropy(a(4, 0), a(4, typestr="<i8"))),
    ("cross entropy reduction", lambda m, a: m.softmax_cross_entropy(a(4, 10), a(4, typestr="<i8"),
                                                                     reduction="none")),
    ("cross entropy validate", lambda m, a: m.softmax_cross_entropy(a(4, 10), a(4, typestr="<i8"), validate=1)),
    ("softmax dim", lambda m, a: m.softmax(a(4), 1)),
    ("accuracy labels shape", lambda m, a: m.accuracy(a(4, 10), a(3, typestr="<i8"))),
]


@pytest.mark.parametrize("numpy_backend", [reference, cpu], ids=["reference", "cpu"])
@pytest.mark.parametrize("call", [c for _, c in CASES], ids=[name for name, _ in CASES])
def test_the_backends_refuse_alike(call, numpy_backend):
    with pytest.raises(Exception) as on_gpu_side:
        call(ops, lambda *shape, typestr="<f4": fake(*shape, typestr=typestr))
    with pytest.raises(Exception) as on_numpy:
        call(numpy_backend, _numpy)
    assert type(on_numpy.value) is type(on_gpu_side.value), (on_numpy.value, on_gpu_side.value)
    assert type(on_numpy.value) in (TypeError, ValueError), on_numpy.value
    assert str(on_numpy.value) == str(on_gpu_side.value)
    assert re.match(r"^[\w\[\]]+: ", str(on_numpy.value)), f"the message names no argument: {on_numpy.value}"


@pytest.mark.parametrize("numpy_backend", [reference, cpu], ids=["reference", "cpu"])
def test_numpy_backends_keep_zero_d_arrays_zero_d(numpy_backend):
    x = np.array(-2.5, np.float32)
    assert numpy_backend.relu(x).shape == () and float(numpy_backend.relu(x)) == 0.0
    assert numpy_backend.relu_backward(np.array(3.0, np.float32), np.array(1.0, np.float32)).shape == ()
