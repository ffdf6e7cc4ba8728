// bindings.cpp - the pyfast._C module: thin wrappers from Python ints (device pointers,
// sizes, the CUDA stream) to the host launchers in kernels/. Arguments are validated in
// pyfast/ops.py; this layer only selects the device, launches, and turns CUDA failures
// into pyfast.CudaError. Nothing here synchronizes unless sync mode is on (PYFAST_SYNC=1).

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "cuda_error.h"
#include "conv2d/conv2d.cuh"
#include "data/data.cuh"
#include "elementwise/elementwise.cuh"
#include "fused/fused.cuh"
#include "loss/loss.cuh"
#include "matmul/matmul.cuh"
#include "optim/optim.cuh"
#include "pool/pool.cuh"
#include "ptx_probe.cuh"

namespace py = pybind11;

// The CUDA build is pyfast._C; the emulated build (csrc/emu, kernels compiled by the host
// compiler) is pyfast._C_emu, with its own controls in the submodule `emulator`.
#if defined(PYFAST_EMULATOR)
#define PYFAST_MODULE_NAME _C_emu
namespace pyfast_emu {
void bind_emulator(py::module_& parent);
}
#else
#define PYFAST_MODULE_NAME _C
#endif

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

using Addresses = std::vector<std::uintptr_t>;

// One ParamSlot per tensor from parallel lists of addresses (an empty list: no such state).
std::vector<ParamSlot> param_slots(const Addresses& params, const Addresses& grads, const Addresses& state0,
                                   const Addresses& state1, const std::vector<std::int64_t>& sizes) {
    std::vector<ParamSlot> slots(params.size());
    for (size_t i = 0; i < params.size(); ++i) {
        slots[i] = ParamSlot{device_ptr<float>(params[i]), device_ptr<const float>(grads[i]),
                             state0.empty() ? nullptr : device_ptr<float>(state0[i]),
                             state1.empty() ? nullptr : device_ptr<float>(state1[i]), sizes[i]};
    }
    return slots;
}

// Geometry lists from pyfast/ops.py, in the order of the params structs' fields.
Conv2dParams conv2d_params(const std::vector<std::int64_t>& v) {
    if (v.size() != 15) throw std::invalid_argument("conv2d geometry: expected 15 values");
    return Conv2dParams{v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], static_cast<int>(v[9]),
                        static_cast<int>(v[10]), static_cast<int>(v[11]), static_cast<int>(v[12]),
                        static_cast<int>(v[13]), static_cast<int>(v[14])};
}

Pool2dParams pool2d_params(const std::vector<std::int64_t>& v) {
    if (v.size() != 15) throw std::invalid_argument("pool2d geometry: expected 15 values");
    return Pool2dParams{v[0],
                        v[1],
                        v[2],
                        v[3],
                        v[4],
                        static_cast<int>(v[5]),
                        static_cast<int>(v[6]),
                        static_cast<int>(v[7]),
                        static_cast<int>(v[8]),
                        static_cast<int>(v[9]),
                        static_cast<int>(v[10]),
                        v[11] != 0,
                        static_cast<int>(v[12]),
                        static_cast<int>(v[13]),
                        static_cast<int>(v[14])};
}

}  // namespace
}  // namespace pyfast

PYBIND11_MODULE(PYFAST_MODULE_NAME, m) {
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
             int inner, bool trans_a, bool trans_b, int activation, int version, int precision, int input_type,
             int config, int splits, std::uintptr_t workspace, int device, std::uintptr_t stream) {
              MatmulParams params{device_ptr<const void>(a), device_ptr<const void>(b),
                                  device_ptr<const float>(bias), device_ptr<float>(c), rows, cols, inner,
                                  trans_a, trans_b, static_cast<Activation>(activation),
                                  static_cast<ElementType>(input_type)};
              run_op("matmul", device, stream, [&](cudaStream_t s) {
                  return matmul(params, static_cast<MatmulVersion>(version), static_cast<MatmulPrecision>(precision),
                                MatmulPlan{config, splits}, device_ptr<float>(workspace), s);
              });
          },
          py::arg("a"), py::arg("b"), py::arg("bias"), py::arg("c"), py::arg("m"), py::arg("n"), py::arg("k"),
          py::arg("trans_a"), py::arg("trans_b"), py::arg("activation"), py::arg("version"), py::arg("precision"),
          py::arg("input_type"), py::arg("config"), py::arg("splits"), py::arg("workspace"), py::arg("device"),
          py::arg("stream"),
          "C (m x n, float32) = act(op(A) @ op(B) + bias). Pointers are device addresses; bias and workspace "
          "may be 0. activation: 0 none, 1 relu. version: 0 simple, 1 tiled, 2 tensor core. precision: 0 fp32 "
          "(versions 0, 1), 1 tf32, 2 bf16 (version 2). input_type: 0 float32, 1 bfloat16 (bf16 only). "
          "config: -1 (by shape) or 0 .. matmul_config_count(version) - 1; splits: 1 .. 64 K slices, whose "
          "partial sums need matmul_workspace_size(m, n, k, splits) bytes of workspace.");

    m.def("matmul_workspace_size",
          [](int rows, int cols, int inner, int splits) {
              return matmul_workspace_bytes(rows, cols, inner, MatmulPlan{-1, splits});
          },
          py::arg("m"), py::arg("n"), py::arg("k"), py::arg("splits"),
          "Bytes of workspace a matmul with `splits` K slices needs (0 when it does not split).");

    m.def("matmul_rule_splits",
          [](int version, int rows, int cols, int inner, int sms) {
              return matmul_rule_splits(static_cast<MatmulVersion>(version), rows, cols, inner, sms);
          },
          py::arg("version"), py::arg("m"), py::arg("n"), py::arg("k"), py::arg("sms"),
          "K slices a shape gets without a measured plan (1: none): split when the tile grid leaves SMs idle and K "
          "is long.");
    m.def("matmul_max_splits", &matmul_max_splits, "The most K slices a plan may ask for.");
    m.def("matmul_config_count", [](int version) { return matmul_config_count(static_cast<MatmulVersion>(version)); },
          py::arg("version"), "Tile configurations of a matmul version (plans index them from 0).");
    m.def("matmul_config_tile",
          [](int version, int config) {
              int block_m = 0, block_n = 0;
              matmul_config_tile(static_cast<MatmulVersion>(version), config, &block_m, &block_n);
              return std::make_tuple(block_m, block_n);
          },
          py::arg("version"), py::arg("config"), "(block_m, block_n): the output tile of one configuration.");

    m.def("linear_mse_sgd_fit",
          [](std::uintptr_t x, std::uintptr_t y, std::uintptr_t weight, std::uintptr_t bias, std::uintptr_t losses,
             int n, int f, int o, int epochs, float lr, int device, std::uintptr_t stream) {
              const LinearFitParams params{device_ptr<const float>(x), device_ptr<const float>(y),
                                           device_ptr<float>(weight), device_ptr<float>(bias),
                                           device_ptr<float>(losses), n, f, o, epochs, lr};
              run_op("linear_mse_sgd_fit", device, stream,
                     [&](cudaStream_t s) { return linear_mse_sgd_fit(params, s); });
          },
          py::arg("x"), py::arg("y"), py::arg("weight"), py::arg("bias"), py::arg("losses"), py::arg("n"),
          py::arg("f"), py::arg("o"), py::arg("epochs"), py::arg("lr"), py::arg("device"), py::arg("stream"),
          "`epochs` full-batch SGD steps of linear regression (MSE) in one launch; weight (o x f) and bias (o) "
          "updated in place, the loss before each step into losses (may be 0). n*o + o*(f+1) <= 12000.");

    m.def("gather_batch",
          [](std::uintptr_t x, std::uintptr_t index, std::uintptr_t shifts, std::uintptr_t out, std::int64_t rows,
             std::int64_t batch, std::int64_t planes, int h, int w, int device, std::uintptr_t stream) {
              run_op("gather_batch", device, stream, [&](cudaStream_t s) {
                  return gather_batch(device_ptr<const float>(x), device_ptr<const std::int64_t>(index),
                                      device_ptr<const std::int32_t>(shifts), device_ptr<float>(out),
                                      GatherShape{rows, batch, planes, h, w}, s);
              });
          },
          py::arg("x"), py::arg("index"), py::arg("shifts"), py::arg("out"), py::arg("rows"), py::arg("batch"),
          py::arg("planes"), py::arg("h"), py::arg("w"), py::arg("device"), py::arg("stream"),
          "out[b] = x[index[b]] shifted by shifts[b] (0 for none), zeros filling in.");
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

    // ------------------------------------------------------------------- losses
    m.def("mse_loss_workspace_size", &mse_loss_workspace_size, py::arg("n"),
          "Floats of scratch memory mse_loss needs for n elements.");

    m.def("mse_loss",
          [](std::uintptr_t pred, std::uintptr_t target, std::uintptr_t grad, std::uintptr_t loss,
             std::uintptr_t workspace, std::int64_t n, float loss_scale, float grad_scale, int device,
             std::uintptr_t stream, std::uintptr_t squares) {
              run_op("mse_loss", device, stream, [&](cudaStream_t s) {
                  return mse_loss(device_ptr<const float>(pred), device_ptr<const float>(target),
                                  device_ptr<float>(grad), device_ptr<float>(loss), device_ptr<float>(workspace), n,
                                  loss_scale, grad_scale, s, device_ptr<float>(squares));
              });
          },
          py::arg("pred"), py::arg("target"), py::arg("grad"), py::arg("loss"), py::arg("workspace"), py::arg("n"),
          py::arg("loss_scale"), py::arg("grad_scale"), py::arg("device"), py::arg("stream"), py::arg("squares") = 0,
          "loss = loss_scale * sum (pred - target)^2, grad = grad_scale * 2 (pred - target), one pass; with "
          "squares (reduction \"none\") (pred - target)^2 per element there, and loss may be 0.");

    m.def("softmax_cross_entropy_workspace_size", &softmax_cross_entropy_workspace_size, py::arg("rows"),
          py::arg("classes"), "Floats of scratch memory softmax_cross_entropy needs.");
    m.def("softmax_cross_entropy",
          [](std::uintptr_t logits, std::uintptr_t labels, bool labels_int64, std::uintptr_t grad, std::uintptr_t loss,
             std::uintptr_t invalid_labels, std::uintptr_t row_loss, std::int64_t rows, std::int64_t classes,
             float loss_scale, float grad_scale, int device, std::uintptr_t stream) {
              const SoftmaxCrossEntropyParams params{device_ptr<const float>(logits), device_ptr<const void>(labels),
                                                     labels_int64, device_ptr<float>(grad), device_ptr<float>(loss),
                                                     device_ptr<long long>(invalid_labels), device_ptr<float>(row_loss),
                                                     rows, classes, loss_scale, grad_scale};
              run_op("softmax_cross_entropy", device, stream,
                     [&](cudaStream_t s) { return softmax_cross_entropy(params, s); });
          },
          py::arg("logits"), py::arg("labels"), py::arg("labels_int64"), py::arg("grad"), py::arg("loss"),
          py::arg("invalid_labels"), py::arg("row_loss"), py::arg("rows"), py::arg("classes"), py::arg("loss_scale"),
          py::arg("grad_scale"), py::arg("device"), py::arg("stream"),
          "Fused softmax cross-entropy: loss, gradient, and the count of labels outside [0, classes).");

    m.def("cross_entropy",
          [](std::uintptr_t logits, std::uintptr_t labels, bool labels_int64, std::uintptr_t target_probs,
             std::uintptr_t weight, std::uintptr_t grad, std::uintptr_t row_loss, std::uintptr_t loss,
             std::uintptr_t invalid_labels, std::uintptr_t scales, long long ignore_index, float label_smoothing,
             int reduction, std::int64_t rows, std::int64_t classes, std::int64_t inner, int device,
             std::uintptr_t stream) {
              const CrossEntropyParams params{device_ptr<const float>(logits),
                                              device_ptr<const void>(labels),
                                              labels_int64,
                                              device_ptr<const float>(target_probs),
                                              device_ptr<const float>(weight),
                                              device_ptr<float>(grad),
                                              device_ptr<float>(row_loss),
                                              device_ptr<float>(loss),
                                              device_ptr<long long>(invalid_labels),
                                              device_ptr<float>(scales),
                                              ignore_index,
                                              label_smoothing,
                                              reduction,
                                              rows,
                                              classes,
                                              inner};
              run_op("cross_entropy", device, stream, [&](cudaStream_t s) { return cross_entropy(params, s); });
          },
          py::arg("logits"), py::arg("labels"), py::arg("labels_int64"), py::arg("target_probs"), py::arg("weight"),
          py::arg("grad"), py::arg("row_loss"), py::arg("loss"), py::arg("invalid_labels"), py::arg("scales"),
          py::arg("ignore_index"), py::arg("label_smoothing"), py::arg("reduction"), py::arg("rows"),
          py::arg("classes"), py::arg("inner"), py::arg("device"), py::arg("stream"),
          "PyTorch's cross_entropy with weight, ignore_index, label_smoothing, reduction (0 mean, 1 sum, 2 "
          "none) and class-index or probability targets: row losses, loss, gradient, invalid-label count.");

    m.def("softmax",
          [](std::uintptr_t logits, std::uintptr_t out, std::int64_t rows, std::int64_t classes, bool log, int device,
             std::uintptr_t stream) {
              run_op(log ? "log_softmax" : "softmax", device, stream, [&](cudaStream_t s) {
                  return softmax(device_ptr<const float>(logits), device_ptr<float>(out), rows, classes, log, s);
              });
          },
          py::arg("logits"), py::arg("out"), py::arg("rows"), py::arg("classes"), py::arg("log"), py::arg("device"),
          py::arg("stream"), "softmax (or log_softmax) of each row.");

    m.def("softmax_backward",
          [](std::uintptr_t dy, std::uintptr_t y, std::uintptr_t dx, std::int64_t rows, std::int64_t classes, bool log,
             int device, std::uintptr_t stream) {
              run_op(log ? "log_softmax_backward" : "softmax_backward", device, stream, [&](cudaStream_t s) {
                  return softmax_backward(device_ptr<const float>(dy), device_ptr<const float>(y),
                                          device_ptr<float>(dx), rows, classes, log, s);
              });
          },
          py::arg("dy"), py::arg("y"), py::arg("dx"), py::arg("rows"), py::arg("classes"), py::arg("log"),
          py::arg("device"), py::arg("stream"), "dx of softmax (or log_softmax) of each row, from dy and its output.");

    m.def("accuracy",
          [](std::uintptr_t logits, std::uintptr_t labels, bool labels_int64, std::int64_t rows, std::int64_t classes,
             std::uintptr_t correct, int device, std::uintptr_t stream) {
              run_op("accuracy", device, stream, [&](cudaStream_t s) {
                  return accuracy(device_ptr<const float>(logits), device_ptr<const void>(labels), labels_int64, rows,
                                  classes, device_ptr<unsigned long long>(correct), s);
              });
          },
          py::arg("logits"), py::arg("labels"), py::arg("labels_int64"), py::arg("rows"), py::arg("classes"),
          py::arg("correct"), py::arg("device"), py::arg("stream"),
          "Count (uint64) of rows whose first maximal logit is at the label.");

    // --------------------------------------------------------------- optimizers
    m.def("sgd_step",
          [](const Addresses& params, const Addresses& grads, const Addresses& velocity,
             const std::vector<std::int64_t>& sizes, float lr, float momentum, float weight_decay, bool nesterov,
             int device, std::uintptr_t stream) {
              const auto slots = param_slots(params, grads, velocity, {}, sizes);
              run_op("sgd_step", device, stream, [&](cudaStream_t s) {
                  return sgd_step(slots, SgdParams{lr, momentum, weight_decay, nesterov}, s);
              });
          },
          py::arg("params"), py::arg("grads"), py::arg("velocity"), py::arg("sizes"), py::arg("lr"),
          py::arg("momentum"), py::arg("weight_decay"), py::arg("nesterov"), py::arg("device"), py::arg("stream"),
          "In-place SGD over parallel lists of tensor addresses (velocity empty without momentum).");

    m.def("adam_step",
          [](const Addresses& params, const Addresses& grads, const Addresses& exp_avg, const Addresses& exp_avg_sq,
             const std::vector<std::int64_t>& sizes, float lr, float beta1, float beta2, float eps,
             float weight_decay, bool decoupled, float step_size, float bias_correction2_sqrt,
             std::uintptr_t schedule, int device, std::uintptr_t stream) {
              const auto slots = param_slots(params, grads, exp_avg, exp_avg_sq, sizes);
              const AdamParams hyper{lr, beta1, beta2, eps, weight_decay, decoupled, step_size,
                                     bias_correction2_sqrt, device_ptr<const float>(schedule)};
              run_op("adam_step", device, stream, [&](cudaStream_t s) { return adam_step(slots, hyper, s); });
          },
          py::arg("params"), py::arg("grads"), py::arg("exp_avg"), py::arg("exp_avg_sq"), py::arg("sizes"),
          py::arg("lr"), py::arg("beta1"), py::arg("beta2"), py::arg("eps"), py::arg("weight_decay"),
          py::arg("decoupled"), py::arg("step_size"), py::arg("bias_correction2_sqrt"), py::arg("schedule"),
          py::arg("device"), py::arg("stream"),
          "In-place Adam / AdamW over parallel lists of tensor addresses. schedule: 0, or the address of two "
          "floats {step_size, bias_correction2_sqrt} on the device that replace the scalar ones.");

    m.def("adam_schedule",
          [](std::uintptr_t step, double lr, double beta1, double beta2, std::uintptr_t schedule, int device,
             std::uintptr_t stream) {
              run_op("adam_schedule", device, stream, [&](cudaStream_t s) {
                  return adam_schedule(device_ptr<long long>(step), lr, beta1, beta2, device_ptr<float>(schedule), s);
              });
          },
          py::arg("step"), py::arg("lr"), py::arg("beta1"), py::arg("beta2"), py::arg("schedule"), py::arg("device"),
          py::arg("stream"),
          "Advance a device step counter (int64) and write Adam's {step_size, sqrt(1 - beta2^step)} for it.");

    // -------------------------------------------------------- convolution and pooling
    // geometry: conv (n, c, h, w, k, r, s, p, q, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w);
    //           pool (planes, h, w, p, q, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, count_include_pad,
    //           dilation_h, dilation_w, divisor_override or 0).
    // version: 0 direct, 1 gemm, 2 implicit, 3 tiled; pass: 0 forward, 1 input gradient, 2 weight
    // gradient; config: the tiled version's configuration (-1: its default; others ignore it).
    m.def("conv2d_tiled_fits", [](const std::vector<std::int64_t>& geometry) {
              return conv2d_tiled_fits(conv2d_params(geometry));
          },
          py::arg("geometry"),
          "Whether version 'tiled' covers this geometry (stride 1, dilation 1, 3x3 or 5x5, padding below the "
          "kernel size, Q <= 256).");
    m.def("conv2d_tiled_plan",
          [](const std::vector<std::int64_t>& geometry, int pass, int config, int sms) {
              return conv2d_tiled_plan(conv2d_params(geometry), static_cast<Conv2dPass>(pass), config, sms);
          },
          py::arg("geometry"), py::arg("pass"), py::arg("config"), py::arg("sms"),
          "Version 'tiled''s launch plan for a pass (see kernels/conv2d/conv2d.cuh; empty: not covered).");
    m.def("conv2d_config_count", [](int pass) { return conv2d_tiled_config_count(static_cast<Conv2dPass>(pass)); },
          py::arg("pass"), "How many configurations version 'tiled' has for a pass (0 forward, 1 dx, 2 dw).");
    m.def("conv2d_workspace_size",
          [](const std::vector<std::int64_t>& geometry, int version, int pass, int config) {
              const Conv2dParams g = conv2d_params(geometry);
              if (version == 1 && !conv2d_gemm_fits(g)) {
                  throw std::invalid_argument("conv2d: version 'gemm' needs C*R*S, N*P*Q and K below 2^31");
              }
              if (version == 2 && !conv2d_implicit_fits(g)) {
                  throw std::invalid_argument(
                      "conv2d: version 'implicit' needs C*R*S, N*P*Q, N*H*W, K*R*S, C and K below 2^31");
              }
              return conv2d_workspace_size(g, static_cast<Conv2dVersion>(version), static_cast<Conv2dPass>(pass),
                                           config);
          },
          py::arg("geometry"), py::arg("version"), py::arg("pass"), py::arg("config"),
          "Floats of scratch memory a conv2d version needs for one pass (0: none).");
    m.def("conv2d",
          [](std::uintptr_t x, std::uintptr_t w, std::uintptr_t bias, std::uintptr_t y, std::uintptr_t workspace,
             const std::vector<std::int64_t>& geometry, int version, int config, bool relu, int device,
             std::uintptr_t stream) {
              const Conv2dParams g = conv2d_params(geometry);
              run_op("conv2d", device, stream, [&](cudaStream_t s) {
                  return conv2d(device_ptr<const float>(x), device_ptr<const float>(w), device_ptr<const float>(bias),
                                device_ptr<float>(y), device_ptr<float>(workspace), g,
                                static_cast<Conv2dVersion>(version), config, relu, s);
              });
          },
          py::arg("x"), py::arg("w"), py::arg("bias"), py::arg("y"), py::arg("workspace"), py::arg("geometry"),
          py::arg("version"), py::arg("config"), py::arg("relu"), py::arg("device"), py::arg("stream"),
          "y = conv2d(x, w) (+ bias; 0 for none), then ReLU if relu.");
    m.def("conv2d_tiled_max_pool",
          [](std::uintptr_t x, std::uintptr_t w, std::uintptr_t bias, std::uintptr_t y, std::uintptr_t indices,
             const std::vector<std::int64_t>& geometry, bool relu, int config, int device, std::uintptr_t stream) {
              const Conv2dParams g = conv2d_params(geometry);
              run_op("conv2d_max_pool2d", device, stream, [&](cudaStream_t s) {
                  return conv2d_tiled_max_pool(device_ptr<const float>(x), device_ptr<const float>(w),
                                               device_ptr<const float>(bias), device_ptr<float>(y),
                                               device_ptr<long long>(indices), g, relu, config, s);
              });
          },
          py::arg("x"), py::arg("w"), py::arg("bias"), py::arg("y"), py::arg("indices"), py::arg("geometry"),
          py::arg("relu"), py::arg("config"), py::arg("device"), py::arg("stream"),
          "The tiled conv's 2x2 stride-2 max-pool of relu?(conv(x, w) + bias), the conv output never written.");
    m.def("conv2d_backward_input",
          [](std::uintptr_t dy, std::uintptr_t w, std::uintptr_t dx, std::uintptr_t workspace,
             const std::vector<std::int64_t>& geometry, int version, int config, int device, std::uintptr_t stream) {
              const Conv2dParams g = conv2d_params(geometry);
              run_op("conv2d_backward_input", device, stream, [&](cudaStream_t s) {
                  return conv2d_backward_input(device_ptr<const float>(dy), device_ptr<const float>(w),
                                               device_ptr<float>(dx), device_ptr<float>(workspace), g,
                                               static_cast<Conv2dVersion>(version), config, s);
              });
          },
          py::arg("dy"), py::arg("w"), py::arg("dx"), py::arg("workspace"), py::arg("geometry"), py::arg("version"),
          py::arg("config"), py::arg("device"), py::arg("stream"), "dx, the gradient of conv2d for its input.");
    m.def("conv2d_backward_weight",
          [](std::uintptr_t dy, std::uintptr_t x, std::uintptr_t dw, std::uintptr_t db, std::uintptr_t workspace,
             const std::vector<std::int64_t>& geometry, int version, int config, int device, std::uintptr_t stream) {
              const Conv2dParams g = conv2d_params(geometry);
              run_op("conv2d_backward_weight", device, stream, [&](cudaStream_t s) {
                  return conv2d_backward_weight(device_ptr<const float>(dy), device_ptr<const float>(x),
                                                device_ptr<float>(dw), device_ptr<float>(db),
                                                device_ptr<float>(workspace), g, static_cast<Conv2dVersion>(version),
                                                config, s);
              });
          },
          py::arg("dy"), py::arg("x"), py::arg("dw"), py::arg("db"), py::arg("workspace"), py::arg("geometry"),
          py::arg("version"), py::arg("config"), py::arg("device"), py::arg("stream"),
          "dw (and db, the bias gradient, where db is not 0: version 'tiled' only), the gradient of conv2d for its "
          "weight.");
    m.def("max_pool2d",
          [](std::uintptr_t x, std::uintptr_t y, std::uintptr_t indices, const std::vector<std::int64_t>& geometry,
             std::uintptr_t bias, int channels, bool relu, int device, std::uintptr_t stream) {
              const Pool2dParams g = pool2d_params(geometry);
              run_op("max_pool2d", device, stream, [&](cudaStream_t s) {
                  return max_pool2d(device_ptr<const float>(x), device_ptr<float>(y), device_ptr<long long>(indices),
                                    g, s, device_ptr<const float>(bias), channels, relu);
              });
          },
          py::arg("x"), py::arg("y"), py::arg("indices"), py::arg("geometry"), py::arg("bias"), py::arg("channels"),
          py::arg("relu"), py::arg("device"), py::arg("stream"),
          "Window maxima and their flat indices in the input plane, of relu(x + bias[c]) when asked (bias 0: "
          "none).");
    m.def("max_pool2d_backward",
          [](std::uintptr_t dy, std::uintptr_t indices, std::uintptr_t dx, const std::vector<std::int64_t>& geometry,
             int device, std::uintptr_t stream) {
              const Pool2dParams g = pool2d_params(geometry);
              run_op("max_pool2d_backward", device, stream, [&](cudaStream_t s) {
                  return max_pool2d_backward(device_ptr<const float>(dy), device_ptr<const long long>(indices),
                                             device_ptr<float>(dx), g, s);
              });
          },
          py::arg("dy"), py::arg("indices"), py::arg("dx"), py::arg("geometry"), py::arg("device"), py::arg("stream"),
          "Gradient of max_pool2d from the indices alone (a memset, then each plane's dy added in order).");
    m.def("max_pool2d_backward_gather",
          [](std::uintptr_t dy, std::uintptr_t indices, std::uintptr_t relu_output, std::uintptr_t dx,
             const std::vector<std::int64_t>& geometry, int device, std::uintptr_t stream) {
              const Pool2dParams g = pool2d_params(geometry);
              run_op("max_pool2d_backward", device, stream, [&](cudaStream_t s) {
                  return max_pool2d_backward_gather(device_ptr<const float>(dy), device_ptr<const long long>(indices),
                                                    device_ptr<const float>(relu_output), device_ptr<float>(dx), g, s);
              });
          },
          py::arg("dy"), py::arg("indices"), py::arg("relu_output"), py::arg("dx"), py::arg("geometry"),
          py::arg("device"), py::arg("stream"),
          "Gradient of max_pool2d from the window geometry: each dx element gathers its windows' dy in a fixed "
          "order and is written once; relu_output (0: none) folds the ReLU's backward in.");
    m.def("avg_pool2d",
          [](std::uintptr_t x, std::uintptr_t y, const std::vector<std::int64_t>& geometry, int device,
             std::uintptr_t stream) {
              const Pool2dParams g = pool2d_params(geometry);
              run_op("avg_pool2d", device, stream, [&](cudaStream_t s) {
                  return avg_pool2d(device_ptr<const float>(x), device_ptr<float>(y), g, s);
              });
          },
          py::arg("x"), py::arg("y"), py::arg("geometry"), py::arg("device"), py::arg("stream"), "Window means.");
    m.def("avg_pool2d_backward",
          [](std::uintptr_t dy, std::uintptr_t dx, const std::vector<std::int64_t>& geometry, int device,
             std::uintptr_t stream) {
              const Pool2dParams g = pool2d_params(geometry);
              run_op("avg_pool2d_backward", device, stream, [&](cudaStream_t s) {
                  return avg_pool2d_backward(device_ptr<const float>(dy), device_ptr<float>(dx), g, s);
              });
          },
          py::arg("dy"), py::arg("dx"), py::arg("geometry"), py::arg("device"), py::arg("stream"),
          "Gradient of avg_pool2d.");

    // ------------------------------------------------------------- PTX instruction probes
    m.def("_ptx_probe_mma",
          [](std::uintptr_t a, std::uintptr_t b, std::uintptr_t c, std::uintptr_t d, bool bf16, int device,
             std::uintptr_t stream) {
              run_op("ptx_probe_mma", device, stream, [&](cudaStream_t s) {
                  return ptx_probe_mma(device_ptr<const float>(a), device_ptr<const float>(b),
                                       device_ptr<const float>(c), device_ptr<float>(d), bf16, s);
              });
          },
          py::arg("a"), py::arg("b"), py::arg("c"), py::arg("d"), py::arg("bf16"), py::arg("device"), py::arg("stream"),
          "One warp's mma.sync: d (16x8) = a (16xK) b (Kx8) + c, K = 16 for bf16 else 8 (TF32), through the "
          "fragment layouts of kernels/common/ptx.cuh.");
    m.def("_ptx_probe_ldmatrix",
          [](std::uintptr_t tiles, std::uintptr_t out, int matrices, bool trans, int device, std::uintptr_t stream) {
              run_op("ptx_probe_ldmatrix", device, stream, [&](cudaStream_t s) {
                  return ptx_probe_ldmatrix(device_ptr<const std::uint16_t>(tiles), device_ptr<std::uint32_t>(out),
                                            matrices, trans, s);
              });
          },
          py::arg("tiles"), py::arg("out"), py::arg("matrices"), py::arg("trans"), py::arg("device"),
          py::arg("stream"), "One warp's ldmatrix of `matrices` 8x8 16-bit tiles; out[lane * matrices + i].");
    m.def("_ptx_probe_cp_async",
          [](std::uintptr_t src, std::uintptr_t src_bytes, std::uintptr_t out, int chunk_bytes, int device,
             std::uintptr_t stream) {
              run_op("ptx_probe_cp_async", device, stream, [&](cudaStream_t s) {
                  return ptx_probe_cp_async(device_ptr<const float>(src), device_ptr<const int>(src_bytes),
                                            device_ptr<float>(out), chunk_bytes, s);
              });
          },
          py::arg("src"), py::arg("src_bytes"), py::arg("out"), py::arg("chunk_bytes"), py::arg("device"),
          py::arg("stream"), "Four threads' cp.async of one chunk each (src_bytes[i] read, zeros after), waited.");

#if defined(PYFAST_EMULATOR)
    pyfast_emu::bind_emulator(m);
#endif
}
