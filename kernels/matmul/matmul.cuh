// matmul.cuh - host launchers of matmul.cu and matmul_tc.cu:
// C = op(A) @ op(B) (+ bias) (then ReLU), float32 output and accumulation.
#pragma once

#include <cstddef>
#include <cuda_runtime.h>

namespace pyfast {

enum class Activation : int { kNone = 0, kRelu = 1 };

// Numbering follows the versions in matmul.cu's header; the Python layer names them.
// kSimple and kTiled multiply in FP32 on the CUDA cores; kTensorCore runs mma.sync on the
// tensor cores with operands rounded to `MatmulPrecision` (TF32 or BF16).
enum class MatmulVersion : int { kSimple = 0, kTiled = 1, kTensorCore = 2 };
enum class MatmulPrecision : int { kFp32 = 0, kTf32 = 1, kBf16 = 2 };
// Storage type of A and B (C and bias are always float32).
enum class ElementType : int { kFloat32 = 0, kBfloat16 = 1 };

struct MatmulParams {
    const void* a;      // op(A) is M x K: A is stored M x K row-major, or K x M when trans_a
    const void* b;      // op(B) is K x N: B is stored K x N row-major, or N x K when trans_b
    const float* bias;  // N values added to every row, or nullptr
    float* c;           // M x N row-major; must not overlap a, b or bias
    int m, n, k;        // each < 2^31; k may be 0 (C = bias or zeros)
    bool trans_a, trans_b;
    Activation activation;
    ElementType input = ElementType::kFloat32;  // kBfloat16 only with the tensor-core version
};

// How one call runs: `config` indexes the version's tile configurations (matmul.cu /
// matmul_tc.cu list them; -1 lets the launcher choose by shape), `splits` > 1 divides K
// into that many slices whose partial products go to a workspace and are then summed in a
// fixed order (deterministic split-K). pyfast/matmul_tuning.json holds measured plans.
struct MatmulPlan {
    int config = -1;
    int splits = 1;
};

// Tile configurations a version offers (tuning searches 0 .. count-1), and the output tile
// (block_m x block_n) of each: 0 x 0 for an unknown one.
int matmul_config_count(MatmulVersion version);
void matmul_config_tile(MatmulVersion version, int config, int* block_m, int* block_n);

// K slices by rule, for a shape with no measured plan (1: do not split; `sms`: the card's SM
// count). The rule is tiled_gemm::rule_splits, the one conv2d's weight gradient follows too.
int matmul_rule_splits(MatmulVersion version, int m, int n, int k, int sms);

// The most K slices a plan may ask for.
int matmul_max_splits();

// Bytes of float32 workspace a plan needs: splits * m * n * 4 when it splits, else 0.
std::size_t matmul_workspace_bytes(int m, int n, int k, const MatmulPlan& plan);

// `workspace` holds matmul_workspace_bytes(...) bytes (nullptr when that is 0).
// Returns cudaErrorInvalidValue for an unknown version / config / precision combination
// and cudaErrorNotSupported for the tensor-core version on a GPU older than sm_80.
cudaError_t matmul(const MatmulParams& params, MatmulVersion version, MatmulPrecision precision,
                   const MatmulPlan& plan, float* workspace, cudaStream_t stream);

// FP32, the launcher's own choice of tiles, no split (conv2d's gemm path).
inline cudaError_t matmul(const MatmulParams& params, MatmulVersion version, cudaStream_t stream) {
    return matmul(params, version, MatmulPrecision::kFp32, MatmulPlan{}, nullptr, stream);
}

// --- shared between matmul.cu and matmul_tc.cu (not bound to Python) ---
// One K slice per blockIdx.z: slice z covers [z * k_chunk, min(k, (z + 1) * k_chunk)).
// With `partial` set, each slice writes its raw sum to partial + z * m * n (no epilogue);
// otherwise k_chunk >= k and the kernel applies bias / activation and writes C.
struct SplitK {
    int k_chunk;     // a multiple of kSplitKAlign
    int slices;      // gridDim.z
    float* partial;  // nullptr when slices == 1
};
constexpr int kSplitKAlign = 32;  // a multiple of every kernel's k-tile

cudaError_t matmul_tensor_core(const MatmulParams& params, MatmulPrecision precision, int config,
                               const SplitK& split, cudaStream_t stream);
int matmul_tensor_core_config_count();
void matmul_tensor_core_config_tile(int config, int* block_m, int* block_n);

}  // namespace pyfast
