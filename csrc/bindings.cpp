// bindings.cpp - the pyfast._C module: thin wrappers from Python ints (device pointers,
// sizes, the CUDA stream) to the host launchers in kernels/. Arguments are validated in
// pyfast/ops.py; this layer only selects the device, launches, and turns CUDA failures
// into pyfast.CudaError. Nothing here synchronizes unless sync mode is on (PYFAST_SYNC=1).

#include <pybind11/pybind11.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <tuple>

#include "cuda_error.h"
#include "elementwise.cuh"
#include "matmul.cuh"

namespace py = pybind11;

namespace pyfast {
namespace {

bool g_sync = [] {
    const char* value = std::getenv("PYFAST_SYNC");
    return value != nullptr && std::strcmp(value, "") != 0 && std::strcmp(value, "0") != 0;
}();

template <typename T>
T* device_ptr(std::uintptr_t address) {
    return reinterpret_cast<T*>(address);
}

// Runs one launcher on `device` and `stream` (CuPy's current ones, passed by ops.py).
template <typename Launch>
void run_op(const char* op, int device, std::uintptr_t stream_handle, Launch&& launch) {
    int current = -1;
    check_cuda(cudaGetDevice(&current), op);
    if (current != device) check_cuda(cudaSetDevice(device), op);
    const auto stream = reinterpret_cast<cudaStream_t>(stream_handle);
    check_cuda(launch(stream), op);
    if (g_sync) {
        py::gil_scoped_release release;
        check_cuda(cudaStreamSynchronize(stream), op);
    }
}

}  // namespace
}  // namespace pyfast

PYBIND11_MODULE(_C, m) {
    using namespace pyfast;
    m.doc() = "pyfast's compiled CUDA kernels. Use pyfast.ops: it checks arguments, allocates "
              "outputs and passes CuPy's current device and stream here.";

    py::register_exception_translator([](std::exception_ptr thrown) {
        try {
            if (thrown) std::rethrow_exception(thrown);
        } catch (const CudaError& e) {
            py::object cls = py::module_::import("pyfast.errors").attr("CudaError");
            py::object error = cls(e.op(), cudaGetErrorName(e.status()), static_cast<int>(e.status()),
                                   cudaGetErrorString(e.status()));
            PyErr_SetObject(cls.ptr(), error.ptr());
        }
    });

    m.def("device_count", [] {
        int count = 0;
        const cudaError_t status = cudaGetDeviceCount(&count);
        if (status != cudaSuccess) {
            cudaGetLastError();
            return std::make_tuple(0, std::string(cudaGetErrorName(status)) + ": " + cudaGetErrorString(status));
        }
        return std::make_tuple(count, std::string());
    }, "(number of CUDA devices, '' or the CUDA error that prevented counting them). Never raises.");

    m.def("runtime_version", [] {
        int version = 0;
        check_cuda(cudaRuntimeGetVersion(&version), "runtime_version");
        return version;
    }, "CUDA runtime version pyfast was built with (statically linked), e.g. 13000.");

    m.def("driver_version", [] {
        int version = 0;
        check_cuda(cudaDriverGetVersion(&version), "driver_version");
        return version;
    }, "CUDA version the installed driver supports (0 when there is no driver).");

    m.def("set_sync", [](bool on) { g_sync = on; },
          "Synchronize and check the stream after every op (what PYFAST_SYNC=1 sets at import).");
    m.def("get_sync", [] { return g_sync; });

    m.def("_raise_cuda_error", [](int status, const std::string& op) {
        check_cuda(static_cast<cudaError_t>(status), op.c_str());
    }, "Raise the pyfast.CudaError for a CUDA status code (tests the error translation).");

    m.def("matmul",
          [](std::uintptr_t a, std::uintptr_t b, std::uintptr_t bias, std::uintptr_t c, int rows, int cols,
             int inner, bool trans_a, bool trans_b, int activation, int version, int device,
             std::uintptr_t stream) {
              MatmulParams params{device_ptr<const float>(a), device_ptr<const float>(b),
                                  device_ptr<const float>(bias), device_ptr<float>(c), rows, cols, inner,
                                  trans_a, trans_b, static_cast<Activation>(activation)};
              run_op("matmul", device, stream, [&](cudaStream_t s) {
                  return matmul(params, static_cast<MatmulVersion>(version), s);
              });
          },
          py::arg("a"), py::arg("b"), py::arg("bias"), py::arg("c"), py::arg("m"), py::arg("n"), py::arg("k"),
          py::arg("trans_a"), py::arg("trans_b"), py::arg("activation"), py::arg("version"),
          py::arg("device"), py::arg("stream"),
          "C (m x n) = act(op(A) @ op(B) + bias). Pointers are device addresses; bias may be 0. "
          "activation: 0 none, 1 relu. version: 0 simple, 1 tiled.");

    m.def("relu",
          [](std::uintptr_t x, std::uintptr_t y, std::int64_t n, int device, std::uintptr_t stream) {
              run_op("relu", device, stream, [&](cudaStream_t s) {
                  return relu(device_ptr<const float>(x), device_ptr<float>(y), n, s);
              });
          },
          py::arg("x"), py::arg("y"), py::arg("n"), py::arg("device"), py::arg("stream"),
          "y = max(x, 0) over n floats (NaN propagates); y may equal x.");

    m.def("relu_backward",
          [](std::uintptr_t dy, std::uintptr_t y, std::uintptr_t dx, std::int64_t n, int device,
             std::uintptr_t stream) {
              run_op("relu_backward", device, stream, [&](cudaStream_t s) {
                  return relu_backward(device_ptr<const float>(dy), device_ptr<const float>(y),
                                       device_ptr<float>(dx), n, s);
              });
          },
          py::arg("dy"), py::arg("y"), py::arg("dx"), py::arg("n"), py::arg("device"), py::arg("stream"),
          "dx = dy where y > 0, else 0, over n floats.");

    m.def("add_bias",
          [](std::uintptr_t x, std::uintptr_t bias, std::uintptr_t y, std::int64_t outer, std::int64_t channels,
             std::int64_t inner, int device, std::uintptr_t stream) {
              run_op("add_bias", device, stream, [&](cudaStream_t s) {
                  return add_bias(device_ptr<const float>(x), device_ptr<const float>(bias), device_ptr<float>(y),
                                  ChannelShape{outer, channels, inner}, s);
              });
          },
          py::arg("x"), py::arg("bias"), py::arg("y"), py::arg("outer"), py::arg("channels"), py::arg("inner"),
          py::arg("device"), py::arg("stream"),
          "y[o, c, i] = x[o, c, i] + bias[c]; y may equal x.");

    m.def("bias_grad_workspace_size",
          [](std::int64_t outer, std::int64_t channels, std::int64_t inner, int device) {
              int current = -1;
              check_cuda(cudaGetDevice(&current), "bias_grad");
              if (current != device) check_cuda(cudaSetDevice(device), "bias_grad");
              return bias_grad_workspace_size(ChannelShape{outer, channels, inner});
          },
          py::arg("outer"), py::arg("channels"), py::arg("inner"), py::arg("device"),
          "Floats of scratch memory bias_grad needs for this shape on this device (0: none).");

    m.def("bias_grad",
          [](std::uintptr_t dy, std::uintptr_t db, std::uintptr_t workspace, std::int64_t outer,
             std::int64_t channels, std::int64_t inner, int device, std::uintptr_t stream) {
              run_op("bias_grad", device, stream, [&](cudaStream_t s) {
                  return bias_grad(device_ptr<const float>(dy), device_ptr<float>(db), device_ptr<float>(workspace),
                                   ChannelShape{outer, channels, inner}, s);
              });
          },
          py::arg("dy"), py::arg("db"), py::arg("workspace"), py::arg("outer"), py::arg("channels"),
          py::arg("inner"), py::arg("device"), py::arg("stream"),
          "db[c] = sum over o, i of dy[o, c, i], deterministic; workspace as bias_grad_workspace_size says.");
}
