#!/usr/bin/env bash
# The one command for a GPU machine with no package index (run from anywhere):
#   bash benchmarks/gpu_check.sh          build, whole test suite, memcheck, benchmarks
#   bash benchmarks/gpu_check.sh quick    the same without the slow tests and with fewer shapes
#   bash benchmarks/gpu_check.sh sanitize build, then the GPU tests under compute-sanitizer memcheck,
#                                         racecheck, initcheck and synccheck, with a summary
#   bash benchmarks/gpu_check.sh matmul   build, the matmul tests (plain, memcheck, racecheck),
#                                         bench_matmul --quick and tune_matmul --quick (the tuned
#                                         table comes back in results.tar; copy it over
#                                         pyfast/matmul_tuning.json to adopt it)
#   bash benchmarks/gpu_check.sh train    build, the trainer's tests (plain, then memcheck, racecheck,
#                                         initcheck, synccheck), bench_train --quick
#   bash benchmarks/gpu_check.sh conv     build, the conv tests (plain, memcheck, racecheck on the tiled
#                                         kernels), bench_conv --quick and tune_conv --quick (the tuned
#                                         table comes back in results.tar as conv_tuning.json)
# 1. builds pyfast in place (pip --no-build-isolation --no-deps; PYFAST_CUDA_ARCHS, default 90),
# 2. runs the whole pytest suite, GPU tests included,
# 3. runs the GPU kernel tests under compute-sanitizer memcheck with CuPy's pool disabled
#    (so an overrun past an array is not hidden inside a larger pooled block),
# 4. runs every benchmark family through benchmarks.run (each checks its results before timing;
#    results.json, report.md and charts bundled in results.tar),
# The results record the commit measured: on a tree copied without .git (the device tool's copy),
# run `python -m benchmarks.source stamp` first and carry benchmarks/SOURCE.json along.
# writing logs and result JSON into $OUT when it is set (as it goes, so a run cut short still
# leaves its logs; at most 8 files), else into a temporary folder, and printing a summary
# table last. Exits non-zero if any step failed; stops at once, with the reason, when no GPU is
# usable (asked before building) or the build fails. Per-step limits: STEP_TIMEOUT (seconds, 600).
set -u
mode=${1:-full}
case "$mode" in full|quick|sanitize|matmul|conv|train) ;; *) echo "usage: $0 [full|quick|sanitize|matmul|conv|train]" >&2; exit 2 ;; esac
cd "$(dirname "$0")/.." || exit 2
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
logs=${OUT:-$(mktemp -d)}
mkdir -p "$logs"
limit=${STEP_TIMEOUT:-600}
summary="$logs/summary.txt"
failed=0
printf '%-10s %-6s %8s  %s\n' step status seconds log > "$summary"

# step NAME TIMEOUT_S COMMAND...: runs and logs one step, records its status and time.
step() {
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS status=ok
    echo "=== $name: $*"
    timeout "$limit" "$@" > "$logs/$name.log" 2>&1 || status="FAIL($?)"
    tail -n 15 "$logs/$name.log"
    [ "$status" = ok ] || failed=1
    printf '%-10s %-6s %8d  %s\n' "$name" "$status" $((SECONDS - start)) "$name.log" >> "$summary"
}

not_slow=()
bench_args=()
if [ "$mode" = quick ]; then
    not_slow=(-m "not slow")
    bench_args=(--quick)
fi

{
    nvidia-smi || true
    nvcc --version || true
    "$PYTHON" -c 'import sys, numpy, cupy; print(sys.version); print("numpy", numpy.__version__, "cupy", cupy.__version__)'
    "$PYTHON" -c 'import torch; print("torch", torch.__version__, "cudnn", torch.backends.cudnn.version())' || true
    "$PYTHON" -m benchmarks.source || true  # the commit measured (git, or the stamp of a copied tree)
} > "$logs/env.log" 2>&1

# Nothing means anything without a usable GPU or without the build: stop there, saying why (a failed
# test or benchmark, by contrast, does not stop the steps after it). The GPU is asked for first, through
# CuPy: the build takes minutes.
stop() {
    echo "=== gpu_check: $1; stopping (logs in $logs)"
    cat "$summary"
    exit 1
}
gpu_seen=$("$PYTHON" -c 'import sys, cupy; sys.exit(0 if cupy.cuda.runtime.getDeviceCount() else "no CUDA device is visible")' 2>&1) \
    || stop "no usable GPU: $(echo "$gpu_seen" | tail -1)"
step build "$limit" env PYFAST_CUDA_ARCHS="${PYFAST_CUDA_ARCHS:-90}" \
    "$PYTHON" -m pip install --no-build-isolation --no-deps -v -e .
[ "$failed" = 0 ] || stop "the build failed: $(grep -iE 'error|failed' "$logs/build.log" | head -1)"
gpu_ok=$("$PYTHON" -c 'import sys, pyfast; sys.exit(0 if pyfast.is_available() else pyfast.unavailable_reason())' 2>&1) \
    || stop "no usable GPU: $(echo "$gpu_ok" | tail -1)"

# record: the test run's entry for benchmarks/results/gpu_test_runs.json (python -m benchmarks.status),
# into the results bundle.
record() {
    mkdir -p "$logs/results"
    "$PYTHON" -m benchmarks.status record "$logs/tests.log" --command "$1" \
        --card "$(nvidia-smi --query-gpu=name --format=csv,noheader 2> /dev/null | head -1)" \
        > "$logs/results/gpu_test_run.json" 2>> "$logs/env.log" || true
}

# bundle: the results folder as results.tar (what a step left of it; none when a step failed early).
bundle() {
    if [ -d "$logs/results" ]; then
        tar -cf "$logs/results.tar" -C "$logs" results && rm -r "$logs/results"
    else
        echo "=== no results to bundle (the benchmark step wrote none: see bench.log)"
    fi
}
GPU_TESTS=(tests/test_matmul.py tests/test_matmul_precision.py tests/test_elementwise.py tests/test_loss.py
           tests/test_optim.py tests/test_conv.py tests/test_conv_tiled.py tests/test_data_on_device.py tests/test_pool.py tests/test_fused.py tests/test_train.py
           tests/test_graph.py tests/test_bad_inputs.py tests/test_properties.py tests/test_reliability.py)
# sanitize TOOL [TEST FILES]: the GPU tests (default GPU_TESTS) under one compute-sanitizer tool.
# CuPy's pool is disabled (an overrun inside a larger pooled block would go unseen); slow shapes,
# whole training runs (marker `trains`) and the PyTorch interop tests (whose start-up alone takes
# minutes under the sanitizer) are left out; property tests draw 5 examples each.
sanitize() {
    local tool=$1
    shift
    local files=("$@")
    [ ${#files[@]} -gt 0 ] || files=("${GPU_TESTS[@]}")
    if ! command -v compute-sanitizer > /dev/null; then
        echo "compute-sanitizer not found" > "$logs/$tool.log"
        printf '%-10s %-6s %8s  %s\n' "$tool" FAIL 0 "$tool.log (compute-sanitizer not found)" >> "$summary"
        failed=1
        return
    fi
    step "$tool" "$limit" env PYFAST_TEST_NO_POOL=1 PYFAST_HYPOTHESIS_EXAMPLES=5 compute-sanitizer --tool "$tool" \
        --error-exitcode 99 --print-limit 50 "$PYTHON" -m pytest -q -p no:cacheprovider -m "gpu and not slow and not trains" \
        -k "not pytorch and not torch and not out_of_memory" "${files[@]}"
}

# One line per sanitizer: its error summary and the tests' pass / fail count.
sanitizer_summary() {
    for tool in memcheck racecheck initcheck synccheck; do
        printf '%-10s ' "$tool"; grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|passed|failed' "$logs/$tool.log" | tail -2 | tr '\n' ' '; echo
    done
}

if [ "$mode" = sanitize ]; then
    for tool in memcheck racecheck initcheck synccheck; do sanitize "$tool"; done
    echo "=== summary (sanitize) on $(nvidia-smi --query-gpu=name --format=csv,noheader 2> /dev/null | head -1)"
    sanitizer_summary
    cat "$summary"
    exit $failed
fi

if [ "$mode" = matmul ]; then
    matmul_tests=(tests/test_matmul.py tests/test_matmul_precision.py)
    step tests "$limit" "$PYTHON" -m pytest -q -ra "${matmul_tests[@]}"
    record "pytest -q -ra ${matmul_tests[*]}"
    sanitize memcheck "${matmul_tests[@]}"
    sanitize racecheck "${matmul_tests[@]}"
    mkdir -p "$logs/results"
    step bench "$limit" "$PYTHON" -m benchmarks.bench_matmul --quick --out "$logs/results"
    # report.md, results.csv and the charts (matmul.png: TFLOP/s against size, cuBLAS lines)
    "$PYTHON" -m benchmarks.report "$logs"/results/matmul-*.json --out "$logs/results" >> "$logs/bench.log" 2>&1 || true
    cp pyfast/matmul_tuning.json "$logs/results/matmul_tuning.json"
    step tune "$limit" "$PYTHON" -m benchmarks.tune_matmul --quick --table "$logs/results/matmul_tuning.json"
    mv "$logs/tune.log" "$logs/results/tune.log"
    bundle
    echo "=== summary (matmul) on $(nvidia-smi --query-gpu=name --format=csv,noheader 2> /dev/null | head -1)"
    grep -E 'passed|failed|error' "$logs/tests.log" | tail -1
    grep -hE 'ERROR SUMMARY|RACECHECK SUMMARY' "$logs/memcheck.log" "$logs/racecheck.log" | tail -4
    grep -E '^ *(case|square|fc1 fwd b64 )' "$logs/bench.log" | head -60 || true
    cat "$summary"
    exit $failed
fi

if [ "$mode" = train ]; then
    train_tests=(tests/test_train.py tests/test_graph.py tests/test_data_on_device.py tests/test_fused.py
                 tests/test_modules.py tests/test_cli.py)
    step tests "$limit" "$PYTHON" -m pytest -q -ra -p no:cacheprovider "${train_tests[@]}"
    record "pytest -q -ra ${train_tests[*]}"
    for tool in memcheck racecheck initcheck synccheck; do sanitize "$tool" "${train_tests[@]}"; done
    mkdir -p "$logs/results"
    step bench "$limit" "$PYTHON" -m benchmarks.bench_train --quick --out "$logs/results"
    bundle
    echo "=== summary (train) on $(nvidia-smi --query-gpu=name --format=csv,noheader 2> /dev/null | head -1)"
    grep -E 'passed|failed|error' "$logs/tests.log" | tail -1
    sanitizer_summary
    grep -E '^ *(case|linreg|cnn|epoch)' "$logs/bench.log" | head -40 || true
    cat "$summary"
    exit $failed
fi

if [ "$mode" = conv ]; then
    conv_tests=(tests/test_conv.py tests/test_conv_tiled.py)
    step tests "$limit" "$PYTHON" -m pytest -q -ra -p no:cacheprovider "${conv_tests[@]}"
    record "pytest -q -ra ${conv_tests[*]}"
    sanitize memcheck tests/test_conv_tiled.py
    sanitize racecheck tests/test_conv_tiled.py
    mkdir -p "$logs/results"
    step bench "$limit" "$PYTHON" -m benchmarks.bench_conv --quick --out "$logs/results"
    cp pyfast/conv_tuning.json "$logs/results/conv_tuning.json"
    step tune "$limit" "$PYTHON" -m benchmarks.tune_conv --quick --table "$logs/results/conv_tuning.json"
    mv "$logs/tune.log" "$logs/results/tune.log"
    bundle
    echo "=== summary (conv) on $(nvidia-smi --query-gpu=name --format=csv,noheader 2> /dev/null | head -1)"
    grep -E 'passed|failed|error' "$logs/tests.log" | tail -1
    grep -hE 'ERROR SUMMARY|RACECHECK SUMMARY' "$logs/memcheck.log" "$logs/racecheck.log" | tail -4
    grep -E '^ *(case|cnn|5x5|resnet)' "$logs/bench.log" | head -80 || true
    cat "$summary"
    exit $failed
fi

step tests "$limit" "$PYTHON" -m pytest -q -ra "${not_slow[@]}" tests
record "pytest -q -ra ${not_slow[*]} tests"
sanitize memcheck
# Every family runs even if one fails (benchmarks.run exits non-zero then); results.json,
# results.csv, report.md and the charts travel as one archive (results.tar).
step bench "$limit" "$PYTHON" -m benchmarks.run ${bench_args[*]} --out "$logs/results"
bundle

echo
echo "=== benchmark highlights (full tables in bench.log)"
grep -E '^ *(case|square (1024|4096|8192)|fc1 (fwd|dw) b(64|1024) |cross_entropy|mse|cnn|1e8|flat|linreg|pool[12] b(64|1024)|resnet)' "$logs/bench.log" || true
echo "=== logs and results in $logs"
echo "=== summary ($mode) on $(nvidia-smi --query-gpu=name --format=csv,noheader 2> /dev/null | head -1)"
grep -E 'passed|failed|error' "$logs/tests.log" | tail -1
grep -E 'ERROR SUMMARY|passed|failed' "$logs/memcheck.log" | tail -2
cat "$summary"
exit $failed
