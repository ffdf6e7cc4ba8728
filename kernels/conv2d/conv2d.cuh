// conv2d.cuh - host launchers of conv2d.cu: 2D convolution (cross-correlation) NCHW x OIHW.
#pragma once

#include <cstdint>
#include <vector>
#include <cuda_runtime.h>

namespace pyfast {

struct Conv2dParams {
    std::int64_t n, c, h, w;  // input  N x C x H x W
    std::int64_t k, r, s;     // weight K x C x R x S
    std::int64_t p, q;        // output N x K x P x Q
    int stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
};

// Numbering follows the versions in conv2d.cu's header; the Python layer names them.
enum class Conv2dVersion : int { kDirect = 0, kGemm = 1, kImplicit = 2, kTiled = 3 };
// The three passes, for the scratch-size and configuration queries.
// kForwardPool: the forward with the 2x2 stride-2 max-pool of its output (tiled version only).
enum class Conv2dPass : int { kForward = 0, kBackwardInput = 1, kBackwardWeight = 2, kForwardPool = 3 };

// Floats of scratch memory a version needs for these sizes and this pass (0: none); `config`
// is the tiled version's configuration (-1: its default).
std::int64_t conv2d_workspace_size(const Conv2dParams& params, Conv2dVersion version, Conv2dPass pass, int config);
// Whether the gemm / implicit versions' matrix dimensions fit their 32-bit GEMM (else they
// return an error).
bool conv2d_gemm_fits(const Conv2dParams& params);
bool conv2d_implicit_fits(const Conv2dParams& params);
// Whether the tiled version (conv2d_tiled.cu) covers this geometry: stride 1, dilation 1,
// 3x3 or 5x5, padding below the kernel size, Q <= 256, 32-bit sizes.
bool conv2d_tiled_fits(const Conv2dParams& params);
// How many configurations the tiled version has for a pass (the `config` range).
int conv2d_tiled_config_count(Conv2dPass pass);

// y = conv(x, w) (+ bias[k], bias may be nullptr), then max(y, 0) when `relu`. `config`: the
// tiled version's configuration (-1: its default; other versions ignore it).
cudaError_t conv2d(const float* x, const float* w, const float* bias, float* y, float* workspace,
                   const Conv2dParams& params, Conv2dVersion version, int config, bool relu, cudaStream_t stream);
// dx = gradient of conv with respect to x, given dy (N x K x P x Q).
cudaError_t conv2d_backward_input(const float* dy, const float* w, float* dx, float* workspace,
                                  const Conv2dParams& params, Conv2dVersion version, int config, cudaStream_t stream);
// dw = gradient of conv with respect to w, given dy and x; db (K floats): the bias gradient from
// the same pass, tiled version only (nullptr for the others, which return an error otherwise).
cudaError_t conv2d_backward_weight(const float* dy, const float* x, float* dw, float* db, float* workspace,
                                   const Conv2dParams& params, Conv2dVersion version, int config,
                                   cudaStream_t stream);

// The tiled version's launch plan for a pass on a card with `sms` SMs (empty: not covered), for
// tests and tuners: forward / input gradient / forward + pool {PX, KT, TX, TY (row groups: of
// two rows with the pool), KG, CB, tiles_w, tiles_h,
// threads, shared bytes}; weight gradient {KT, PXW, KG, CB, RG, chunk, slices, tasks per
// slice, QP, LD, threads, shared bytes} (conv2d_tiled.cu's header names them).
std::vector<int> conv2d_tiled_plan(const Conv2dParams& params, Conv2dPass pass, int config, int sms);
// The tiled version's launchers (conv2d_tiled.cu), called by the three above.
std::int64_t conv2d_tiled_workspace_size(const Conv2dParams& params, int config);
cudaError_t conv2d_tiled(const float* x, const float* w, const float* bias, float* y, const Conv2dParams& params,
                         bool relu, int config, cudaStream_t stream);
// y_pool, indices = max_pool2d(relu?(conv(x, w) + bias), 2): the 2x2 stride-2 max-pool of the
// output (PyTorch's scan and NaN rule; indices flat in the P x Q output plane), the output itself
// never written. Configurations with an even PX and at most 64 accumulators (0, 1, 2, 4, 5, 8).
cudaError_t conv2d_tiled_max_pool(const float* x, const float* w, const float* bias, float* y_pool,
                                  long long* indices, const Conv2dParams& params, bool relu, int config,
                                  cudaStream_t stream);
cudaError_t conv2d_tiled_backward_input(const float* dy, const float* w, float* dx, const Conv2dParams& params,
                                        int config, cudaStream_t stream);
cudaError_t conv2d_tiled_backward_weight(const float* dy, const float* x, float* dw, float* db, float* workspace,
                                         const Conv2dParams& params, int config, cudaStream_t stream);

}  // namespace pyfast
