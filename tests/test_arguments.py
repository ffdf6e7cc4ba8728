"""CPU tests of argument checking, availability and error translation: every check in
pyfast.ops reads only metadata, so objects with a fake __cuda_array_interface__ exercise
them without a GPU. (On a GPU machine the fakes never reach a kernel: each case fails a
check first, and the one that would pass the checks is skipped there.)"""

import os
import subprocess
import sys

import numpy as np
import pytest

import pyfast
from conftest import fake
from pyfast import _arrays, ops, reference


GOOD_A, GOOD_B = fake(4, 3), fake(3, 5)


def test_numpy_input_is_a_type_error_that_says_how_to_convert():
    with pytest.raises(TypeError, match=r"a: .*NumPy array.*cupy\.asarray\(a\)"):
        ops.matmul(np.ones((2, 2), np.float32), GOOD_B)
    with pytest.raises(TypeError, match=r"dy: .*NumPy"):
        ops.bias_grad(np.ones((2, 2), np.float32))


@pytest.mark.parametrize("value", [[1.0, 2.0], 3.0, "x", object()])
def test_non_arrays_are_type_errors(value):
    with pytest.raises(TypeError, match=r"^input: expected a CuPy array"):
        ops.relu(value)


@pytest.mark.parametrize("typestr", ["<f8", "<f2", "<i4", "|b1"])
def test_wrong_dtype_is_a_type_error_naming_the_argument(typestr):
    with pytest.raises(TypeError, match=r"b: expected dtype float32"):
        ops.matmul(GOOD_A, fake(3, 5, typestr=typestr))
    with pytest.raises(TypeError, match=r"bias: expected dtype float32"):
        ops.add_bias(fake(2, 3), fake(3, typestr=typestr))


def test_shape_errors_name_the_argument_and_both_shapes():
    with pytest.raises(ValueError, match=r"inner dimensions differ: op\(a\) is 4x3 .* op\(b\) is 4x5"):
        ops.matmul(GOOD_A, fake(4, 5))
    with pytest.raises(ValueError, match=r"a: expected a 2-D array .*got shape \(4,\)"):
        ops.matmul(fake(4), GOOD_B)
    with pytest.raises(ValueError, match=r"bias: expected shape \(5,\), got \(4,\)"):
        ops.matmul(GOOD_A, GOOD_B, bias=fake(4))
    with pytest.raises(ValueError, match=r"bias: expected shape \(3,\), got \(1, 3\)"):
        ops.add_bias(fake(2, 3, 4, 4), fake(1, 3))
    with pytest.raises(ValueError, match=r"y: expected shape \(2, 3\), got \(3, 2\)"):
        ops.relu_backward(fake(2, 3), fake(3, 2))
    with pytest.raises(ValueError, match=r"dy: expected at least 2 dimensions"):
        ops.bias_grad(fake(7))


def test_transposed_shapes_are_checked_as_transposed():
    with pytest.raises(ValueError, match="inner dimensions"):
        ops.matmul(GOOD_A, GOOD_B, trans_a=True)  # op(a) is 3x4 against 3x5


def test_non_contiguous_is_a_value_error():
    every_other_column = fake(4, 3, strides=(24, 8))  # a 4x6 array's [:, ::2]
    with pytest.raises(ValueError, match=r"a: expected a C-contiguous array or the transpose of one.*"
                                         r"ascontiguousarray\(a\)"):
        ops.matmul(every_other_column, GOOD_B)
    with pytest.raises(ValueError, match=r"input: expected a C-contiguous array \(shape \(3, 4\)\)"):
        ops.relu(fake(3, 4, strides=(4, 12)))  # transposed views are for matmul only
    negative = fake(5, strides=(-4,))
    with pytest.raises(ValueError, match=r"input: expected a C-contiguous"):
        ops.relu(negative)


def test_transposed_views_are_read_by_matmul():
    transposed_a = _arrays.checked_input("a", fake(4, 3, strides=(4, 16)), transposed_ok=True)  # a 3x4 array's .T
    assert not transposed_a.contiguous and transposed_a.f_contiguous
    under = np.zeros((3, 4), np.float32)  # the launch gets the C-contiguous matrix under the view, flag flipped
    a, trans = _arrays.untransposed(under.T, transposed_a, False)
    assert a.flags.c_contiguous and a.shape == (3, 4) and trans is True
    assert _arrays.untransposed(under.T, transposed_a, True)[1] is False
    # A matrix with a size-1 dimension is C-contiguous whatever its strides: read as it is.
    column = _arrays.checked_input("b", fake(3, 1, strides=(4, 4)), transposed_ok=True)
    assert column.contiguous and _arrays.untransposed(under, column, False) == (under, False)
    # The shape rules apply to the view as given: op(a) of a 4x3 .T view is 4x3.
    with pytest.raises(ValueError, match=r"op\(a\) is 4x3 .* op\(b\) is 4x5"):
        ops.matmul(fake(4, 3, strides=(4, 16)), fake(4, 5))


def test_contiguous_strides_and_size_one_dimensions_are_accepted():
    # Explicit C strides, and any stride on a size-1 dimension, are still contiguous.
    assert _arrays.operand("x", fake(2, 3, strides=(12, 4))).contiguous
    assert _arrays.operand("x", fake(1, 3, strides=(999, 4))).contiguous


@pytest.mark.parametrize("interface", [
    {"shape": (2,), "typestr": "<f4"},                       # no data
    {"shape": (2,), "typestr": "nonsense", "data": (1, False)},
    {"shape": "ab", "typestr": "<f4", "data": (1, False)},
    "not a dict",
])
def test_malformed_interface_is_a_type_error(interface):
    obj = type("Malformed", (), {"__cuda_array_interface__": interface})()
    with pytest.raises(TypeError, match=r"^input: .*__cuda_array_interface__"):
        ops.relu(obj)


def test_null_pointer_with_elements_is_rejected():
    with pytest.raises(ValueError, match="null data pointer"):
        ops.relu(fake(3, data=(0, False)))


def test_interface_that_raises_is_a_type_error():
    class RequiresGrad:
        @property
        def __cuda_array_interface__(self):
            raise RuntimeError("Can't get __cuda_array_interface__ on Variable that requires grad")

    with pytest.raises(TypeError, match="input: cannot read its __cuda_array_interface__"):
        ops.relu(RequiresGrad())


def test_interface_that_raises_falls_back_to_dlpack():
    # PyTorch bfloat16 tensors have no __cuda_array_interface__ but do export DLPack: the
    # DLPack path is taken (here it reports the fake's CPU device).
    class Bfloat16Like:
        @property
        def __cuda_array_interface__(self):
            raise TypeError("dtype bfloat16 is not supported by __cuda_array_interface__")

        def __dlpack__(self, stream=None):
            raise AssertionError("not reached: the device is checked first")

        def __dlpack_device__(self):
            return (1, 0)  # kDLCPU

    with pytest.raises(TypeError, match="a: expected an array on a CUDA device"):
        ops.matmul(Bfloat16Like(), GOOD_B, precision="bf16")


def test_cpu_dlpack_array_is_rejected():
    class CpuDLPack:
        def __dlpack__(self, stream=None):
            raise AssertionError("must not be consumed")

        def __dlpack_device__(self):
            return (1, 0)  # kDLCPU

    with pytest.raises(TypeError, match="input: expected an array on a CUDA device"):
        ops.relu(CpuDLPack())


def test_options_are_checked():
    with pytest.raises(ValueError, match=r"activation: expected one of \[None, 'relu'\], got 'gelu'"):
        ops.matmul(GOOD_A, GOOD_B, activation="gelu")
    with pytest.raises(ValueError, match=r"version: expected one of \['simple', 'tiled'\]"):
        ops.matmul(GOOD_A, GOOD_B, version="fastest")
    with pytest.raises(TypeError, match=r"trans_a: expected True or False, got 1"):
        ops.matmul(GOOD_A, GOOD_B, trans_a=1)


@pytest.mark.skipif(pyfast.is_available(), reason="checks the no-GPU path; the fake pointers must not reach a GPU")
@pytest.mark.parametrize("call", [
    lambda: ops.matmul(GOOD_A, GOOD_B),
    lambda: ops.matmul(fake(4, 3, strides=(4, 16)), fake(3, 5, strides=(4, 12))),  # transposed views pass
    lambda: ops.matmul(fake(0, 3), GOOD_B),  # zero-size also needs the GPU to allocate
    lambda: ops.relu(fake(3)),
    lambda: ops.relu_backward(fake(3), fake(3)),
    lambda: ops.add_bias(fake(2, 3), fake(3)),
    lambda: ops.bias_grad(fake(2, 3)),
])
def test_valid_arguments_without_a_gpu_raise_a_clear_runtime_error(call):
    with pytest.raises(RuntimeError, match=r"needs a usable CUDA GPU.*pyfast\.reference"):
        call()


def test_availability_is_reported_without_raising():
    assert isinstance(pyfast.is_available(), bool)
    assert pyfast.is_available() == (pyfast.unavailable_reason() == "")


def test_import_and_availability_in_a_fresh_process():
    code = "import pyfast; print(pyfast.is_available(), bool(pyfast.unavailable_reason()))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() in (["True", "False"], ["False", "True"])


# ------------------------------------------------------------------ reference checks
def test_reference_rejects_the_same_things_with_the_same_errors():
    with pytest.raises(TypeError, match=r"a: expected a NumPy array"):
        reference.matmul(GOOD_A, np.ones((3, 5), np.float32))
    with pytest.raises(TypeError, match=r"b: expected dtype float32, got float64"):
        reference.matmul(np.ones((4, 3), np.float32), np.ones((3, 5)))
    with pytest.raises(ValueError, match=r"inner dimensions differ"):
        reference.matmul(np.ones((4, 3), np.float32), np.ones((4, 5), np.float32))
    with pytest.raises(ValueError, match=r"out: expected shape \(4, 5\), got \(5, 4\)"):
        reference.matmul(np.ones((4, 3), np.float32), np.ones((3, 5), np.float32), out=np.empty((5, 4), np.float32))
    with pytest.raises(TypeError, match=r"out: expected dtype float32"):
        reference.relu(np.ones(3, np.float32), out=np.empty(3))


# ------------------------------------------------------------------ the compiled module
def _compiled():
    return pytest.importorskip("pyfast._C", reason="the extension is not built")


def test_cuda_errors_become_pyfast_cuda_error():
    C = _compiled()
    with pytest.raises(pyfast.CudaError) as info:
        C._raise_cuda_error(1, "matmul")
    error = info.value
    assert isinstance(error, RuntimeError)
    assert (error.op, error.name, error.code) == ("matmul", "cudaErrorInvalidValue", 1)
    assert "matmul: CUDA error cudaErrorInvalidValue (1)" in str(error)


def test_sync_mode_follows_the_environment():
    _compiled()
    for value, expected in (("1", "True"), ("0", "False"), ("", "False")):
        env = dict(os.environ, PYFAST_SYNC=value)
        result = subprocess.run([sys.executable, "-c", "import pyfast._C as C; print(C.get_sync())"],
                                capture_output=True, text=True, env=env, timeout=120)
        assert result.stdout.strip() == expected, result.stderr
