// ptx.cpp - the PTX instructions of kernels/common/ptx.cuh, as the emulator runs them: mma.sync and
// ldmatrix as warp collectives that gather every lane's fragments in the PTX ISA's layout,
// compute, and hand each lane its part; cp.async as copies queued per thread and done when a
// cp.async.wait_group covers them (the latest moment the GPU could do them), so a read of the
// destination before the wait sees the poisoned shared memory.

#include <cstring>
#include <string>

#include "internal.h"
#include "common/ptx.cuh"
#include "pyfast_emu.h"

namespace pyfast_emu {
namespace {

float tf32_value(std::uint32_t word) {  // the tensor cores read the top 19 bits of a TF32 operand
    return from_bits<float>(word & 0xffffe000u);
}

float bf16_value(std::uint32_t word, int half) {
    return from_bits<float>(((word >> (16 * half)) & 0xffffu) << 16);
}

struct MmaFragments {
    float* c;
    const std::uint32_t* a;
    const std::uint32_t* b;
};

// D = A B + C for one m16n8kK tile, K = 8 (TF32) or 16 (BF16); each product is exact in double
// and the sum is rounded to float once.
template <int K>
void combine_mma(WarpSlot* const* slots, unsigned, const void*) {
    double a[16][K] = {}, b[K][8] = {}, c[16][8] = {};
    for (int lane = 0; lane < 32; ++lane) {
        const MmaFragments& f = *static_cast<const MmaFragments*>(slots[lane]->data);
        const int g = lane / 4, t = lane % 4;
        for (int q = 0; q < 4; ++q) c[g + 8 * (q / 2)][2 * t + q % 2] = f.c[q];
        // a0..a3: rows g, g + 8, g, g + 8 at word columns t, t, t + 4, t + 4
        for (int q = 0; q < 4; ++q) {
            const int row = g + 8 * (q % 2), column = t + 4 * (q / 2);
            if (K == 8) {
                a[row][column] = tf32_value(f.a[q]);
            } else {
                a[row][2 * column] = bf16_value(f.a[q], 0);
                a[row][2 * column + 1] = bf16_value(f.a[q], 1);
            }
        }
        for (int q = 0; q < 2; ++q) {
            const int k = t + 4 * q;
            if (K == 8) {
                b[k][g] = tf32_value(f.b[q]);
            } else {
                b[2 * k][g] = bf16_value(f.b[q], 0);
                b[2 * k + 1][g] = bf16_value(f.b[q], 1);
            }
        }
    }
    for (int lane = 0; lane < 32; ++lane) {
        const MmaFragments& f = *static_cast<const MmaFragments*>(slots[lane]->data);
        const int g = lane / 4, t = lane % 4;
        for (int q = 0; q < 4; ++q) {
            const int row = g + 8 * (q / 2), column = 2 * t + q % 2;
            double sum = c[row][column];
            for (int k = 0; k < K; ++k) sum += a[row][k] * b[k][column];
            f.c[q] = static_cast<float>(sum);
        }
    }
}

struct LdmatrixInfo {
    int matrices;
    bool trans;
};

struct LdmatrixFragments {
    std::uint32_t* r;
    const void* row;
    const char* file;
    int line;
};

void combine_ldmatrix(WarpSlot* const* slots, unsigned, const void* info_ptr) {
    const LdmatrixInfo& info = *static_cast<const LdmatrixInfo*>(info_ptr);
    std::uint16_t tiles[4][8][8];
    for (int m = 0; m < info.matrices; ++m) {
        for (int r = 0; r < 8; ++r) {
            const int lane = 8 * m + r;
            const LdmatrixFragments& f = *static_cast<const LdmatrixFragments*>(slots[lane]->data);
            const void* row = f.row;
            if (row == nullptr || reinterpret_cast<std::uintptr_t>(row) % 16 != 0) {
                const std::string what = "ldmatrix: lane " + std::to_string(lane) +
                                         " supplies a row address that is not 16-byte aligned";
                fault(cudaErrorMisalignedAddress, what.c_str(), f.file, f.line);
            }
            std::memcpy(tiles[m][r], row, 16);
        }
    }
    for (int lane = 0; lane < 32; ++lane) {
        std::uint32_t* r = static_cast<const LdmatrixFragments*>(slots[lane]->data)->r;
        const int row = lane / 4, column = 2 * (lane % 4);
        for (int m = 0; m < info.matrices; ++m) {
            const std::uint16_t lo = info.trans ? tiles[m][column][row] : tiles[m][row][column];
            const std::uint16_t hi = info.trans ? tiles[m][column + 1][row] : tiles[m][row][column + 1];
            r[m] = lo | (static_cast<std::uint32_t>(hi) << 16);
        }
    }
}

}  // namespace

std::uint32_t cvt_rna_tf32(float x) {
    const std::uint32_t bits = to_bits(x) & 0xffffffffu;
    if ((bits & 0x7fffffffu) > 0x7f800000u) return 0x7fffffffu;  // NaN
    // Nearest, ties away from zero: add half of the dropped 13 bits' range to the magnitude.
    return (bits + 0x1000u) & 0xffffe000u;
}

void mma_m16n8k8_tf32(float* c, const std::uint32_t* a, const std::uint32_t* b, const char* file, int line) {
    MmaFragments fragments{c, a, b};
    WarpSlot slot;
    slot.data = &fragments;
    warp_collective(WarpOp::kMma, 0xffffffffu, &slot, combine_mma<8>, nullptr, file, line);
}

void mma_m16n8k16_bf16(float* c, const std::uint32_t* a, const std::uint32_t* b, const char* file, int line) {
    MmaFragments fragments{c, a, b};
    WarpSlot slot;
    slot.data = &fragments;
    warp_collective(WarpOp::kMma, 0xffffffffu, &slot, combine_mma<16>, nullptr, file, line);
}

void ldmatrix(std::uint32_t* r, int matrices, bool trans, const void* row, const char* file, int line) {
    static const LdmatrixInfo kinds[2][5] = {{{0, false}, {1, false}, {2, false}, {0, false}, {4, false}},
                                             {{0, true}, {1, true}, {2, true}, {0, true}, {4, true}}};
    LdmatrixFragments fragments{r, row, file, line};
    WarpSlot slot;
    slot.data = &fragments;
    warp_collective(WarpOp::kLdmatrix, 0xffffffffu, &slot, combine_ldmatrix, &kinds[trans ? 1 : 0][matrices], file,
                    line);
}

void cp_async(void* shared, const void* global, int bytes, int src_bytes, const char* file, int line) {
    if (src_bytes < 0 || src_bytes > bytes) fault(cudaErrorIllegalInstruction, "cp.async: src-size outside 0 .. cp-size", file, line);
    if (reinterpret_cast<std::uintptr_t>(shared) % bytes != 0 || reinterpret_cast<std::uintptr_t>(global) % bytes != 0) {
        fault(cudaErrorMisalignedAddress, "cp.async: an address not aligned to the copy's size", file, line);
    }
    if (src_bytes > 0 && global == nullptr) fault(cudaErrorIllegalAddress, "cp.async from a null pointer", file, line);
    running_thread_copies().open.push_back(AsyncCopy{shared, global, bytes, src_bytes});
}

void cp_async_commit() {
    AsyncCopies& copies = running_thread_copies();
    copies.committed.push_back(std::move(copies.open));
    copies.open.clear();
}

void cp_async_wait(int pending_groups) { complete_copies(running_thread_copies(), pending_groups); }

void complete_copies(AsyncCopies& copies, int keep) {
    auto complete = [](const std::vector<AsyncCopy>& group) {
        for (const AsyncCopy& copy : group) {
            if (copy.src_bytes > 0) std::memcpy(copy.dst, copy.src, static_cast<std::size_t>(copy.src_bytes));
            std::memset(static_cast<char*>(copy.dst) + copy.src_bytes, 0,
                        static_cast<std::size_t>(copy.bytes - copy.src_bytes));
        }
    };
    const std::size_t groups = copies.committed.size();
    const std::size_t done = keep < 0 ? groups : (groups > static_cast<std::size_t>(keep) ? groups - keep : 0);
    for (std::size_t i = 0; i < done; ++i) complete(copies.committed[i]);
    copies.committed.erase(copies.committed.begin(), copies.committed.begin() + static_cast<std::ptrdiff_t>(done));
    if (keep < 0) {
        complete(copies.open);
        copies.open.clear();
    }
}

}  // namespace pyfast_emu
