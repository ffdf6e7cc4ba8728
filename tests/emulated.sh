#!/usr/bin/env bash
# tests/emulated.sh - the GPU tests without a GPU, on pyfast's CPU emulator (pyfast.emulator):
#   suite     every `gpu` test not marked slow, PYFAST_EMULATE=1 (the README's "Without a GPU")
#   sanitize  the kernel tests on the emulated build under AddressSanitizer + UBSan (out-of-bounds
#             global and shared accesses, misaligned vector loads, signed overflow in index math);
#             builds it first into build/emu-sanitize (about 1.5 minutes on 2 cores)
#   order     the kernel tests with threads and blocks in a random order (a result that changes with
#             the order is a race), once with 1 SM and once with 1000 (the rules that size grids)
#   profile   the profiler's tests (tests/test_profile.py) on the profiled emulated build
#             (PYFAST_EMU_PROFILE=1: every kernel access counted), which it builds first into
#             build/emu-profile (about 2 minutes on 2 cores), the README's profile commands, and the
#             element-wise kernels' tests on that build (the counting must not change a result)
#   all       the four, in that order, each with its time
# Run from the repository root after `pip install -e ".[test]"`. PYFAST_TEST_WORKERS sets pytest's
# worker count (default: one per core); further arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-suite}"
[ $# -gt 0 ] && shift
PYTHON="${PYTHON:-python3}"
workers=(-n "${PYFAST_TEST_WORKERS:-auto}")
# The kernels' own tests: what the sanitizer and the order runs repeat (the trainer's tests run the
# same kernels, in the suite).
KERNEL_TESTS=(tests/test_matmul.py tests/test_matmul_precision.py tests/test_conv.py tests/test_conv_tiled.py
              tests/test_pool.py tests/test_loss.py tests/test_elementwise.py tests/test_optim.py tests/test_fused.py
              tests/test_data_on_device.py tests/test_ptx.py tests/test_properties.py tests/test_emulator.py
              tests/test_torch_parity.py)
# The sanitized and random-order passes are about the kernels: their files' GPU tests and the
# emulator's own; the CPU-only tests (NumPy twins, PyTorch comparisons) run once, in the CPU suite.
KERNEL_MARKS="(gpu or emulator) and not slow and not trains"

suite() {
    echo "== emulated GPU suite"
    PYFAST_EMULATE=1 "$PYTHON" -m pytest -q "${workers[@]}" -m "gpu and not slow" "$@"
}

sanitize() {
    echo "== kernel tests under AddressSanitizer + UBSan"
    PYFAST_BUILD=emulator PYFAST_EMU_SANITIZE=address,undefined "$PYTHON" setup.py -q build_ext \
        --build-lib build/emu-sanitize --build-temp build/emu-sanitize-temp > build/emu-sanitize.log 2>&1 \
        || { tail -50 build/emu-sanitize.log; exit 1; }
    local module reports="$PWD/build/sanitizer-reports"
    module=$(ls build/emu-sanitize/pyfast/_C_emu*.so)
    rm -rf "$reports" && mkdir -p "$reports"
    # Python itself is not instrumented: the sanitizer's runtime (and libstdc++, whose exceptions it
    # intercepts) must be loaded first. Leaks are Python's own; an allocation beyond the emulated
    # card's memory must fail as cudaMalloc does, not abort. Under the sanitizers the kernels run
    # about 4x slower: the largest shapes (the second CNN layer at batch 128, the 64- and
    # 128-channel tiled cases, the 1024 matmuls, each 15-70 s there) stay in the unsanitized runs
    # only; their code paths run here at smaller shapes. A report goes to a file of $reports
    # (pytest-xdist loses a crashed worker's stderr) and is printed when the run fails. (No
    # comment lines inside the command below: one after a backslash ends the command there.)
    LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so)" \
    ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:allocator_may_return_null=1:log_path=$reports/asan" \
    UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$reports/ubsan" \
    PYFAST_EMULATE=1 PYFAST_EMU_MODULE="$module" PYFAST_HYPOTHESIS_EXAMPLES="${PYFAST_HYPOTHESIS_EXAMPLES:-5}" \
        "$PYTHON" -m pytest -q "${workers[@]}" -m "$KERNEL_MARKS" -k "not (b128 or x4x64x32x32 or x2x128x28x28 or 1024-simple or 1024-tiled or repeatable[1024])" \
        "${KERNEL_TESTS[@]}" "$@" \
        || { local failed=$?; for report in "$reports"/*; do [ -f "$report" ] && { echo "== $report"; head -150 "$report"; }; done
             exit $failed; }
}

profile() {
    echo "== the profiler's tests on the profiled build"
    PYFAST_BUILD=emulator PYFAST_EMU_PROFILE=1 "$PYTHON" setup.py -q build_ext \
        --build-lib build/emu-profile --build-temp build/emu-profile-temp > build/emu-profile.log 2>&1 \
        || { tail -50 build/emu-profile.log; exit 1; }
    local module
    module=$(ls build/emu-profile/pyfast/_C_emu*.so)
    PYFAST_EMULATE=1 PYFAST_EMU_MODULE="$module" PYFAST_HYPOTHESIS_EXAMPLES="${PYFAST_HYPOTHESIS_EXAMPLES:-5}" \
        "$PYTHON" -m pytest -q "${workers[@]}" -m "not slow and not trains" tests/test_profile.py \
        tests/test_readme.py::test_the_profile_commands_run_as_written tests/test_elementwise.py "$@"
}

order() {
    local sms seed=1
    for sms in 1 1000; do
        echo "== kernel tests in random order (seed $seed), $sms SMs"
        PYFAST_EMULATE=1 PYFAST_EMU_ORDER=random PYFAST_EMU_SEED=$seed PYFAST_EMU_SM_COUNT=$sms \
            "$PYTHON" -m pytest -q "${workers[@]}" -m "$KERNEL_MARKS" "${KERNEL_TESTS[@]}" "$@"
        seed=$((seed + 1))
    done
}

mkdir -p build
case "$mode" in
    suite) suite "$@" ;;
    sanitize) sanitize "$@" ;;
    order) order "$@" ;;
    profile) profile "$@" ;;
    all) for part in suite sanitize order profile; do
             start=$SECONDS; "$part" "$@"; echo "== $part: $((SECONDS - start)) s"
         done ;;
    *) echo "usage: tests/emulated.sh [suite|sanitize|order|profile|all] [pytest arguments]" >&2; exit 2 ;;
esac
