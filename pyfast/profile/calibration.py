"""The model's calibration on the recorded GPU times.

    python -m pyfast.profile calibrate profile   # profile every recorded point (minutes; writes calibration.json)
    python -m pyfast.profile calibrate fit       # fit the parameters, write them to cards.json, print the errors

The points: every pyfast time recorded on a GPU whose kernel is today's kernel (the bodies of the
direct, gemm and implicit convolutions, the tiled GEMM, matmul, the element-wise ops and the
optimizers are unchanged since those runs; their launch decisions are forced as they were then:
matmul without split-K). Pooling, the losses and the fused kernels changed since, and stay out.
- H100 SXM, 1df731c (benchmarks/results/nvidia-h100-80gb-hbm3-2026-11-26/perf.json): each conv
  pass of three versions on six layers, and FP32 matmul;
- H200 (benchmarks/results/nvidia-h200-2026-11-26/results.json): matmul (simple, tiled) on squares
  and the CNN's linear layers, the element-wise ops, the optimizers on the CNN's parameters.
Each is profiled on the emulator (a few sampled blocks per launch, the others skipped: their
counts are scaled) and stored with its measured time in calibration.json, so fitting and its
tests need no emulator. The fit minimises the mean |log(modelled / measured)| over all points,
each capped at log 1.5 (a kernel the model gets wrong by 5x would otherwise pull every other
kernel's fit towards it; both cards share the SM's parameters); leave-one-family-out refits
without each family and scores it.
"""

import json
import math
import os
import sys
import time

import numpy as np

from pyfast.profile import model

HERE = os.path.dirname(os.path.abspath(__file__))
POINTS_FILE = os.path.join(HERE, "calibration.json")
RESULTS = os.path.join(os.path.dirname(os.path.dirname(HERE)), "benchmarks", "results")
H100_RUN = os.path.join(RESULTS, "nvidia-h100-80gb-hbm3-2026-11-26", "perf.json")
H200_RUN = os.path.join(RESULTS, "nvidia-h200-2026-11-26", "results.json")
PARAMETERS = ("issue_efficiency", "latency_cycles", "ffma_ilp", "bandwidth_efficiency", "sm_bandwidth_gbps",
              "memory_latency_cycles", "l2_gbps", "launch_us")

CONV_LAYERS = {  # perf.json's cases: N, C, H = W, K, R = S, padding (stride 1)
    "mnist_c1_b128": (128, 1, 28, 32, 3, 1), "mnist_c2_b128": (128, 32, 14, 64, 3, 1),
    "mnist_c1_b1024": (1024, 1, 28, 32, 3, 1), "mnist_c2_b1024": (1024, 32, 14, 64, 3, 1),
    "resnet_128_b128": (128, 128, 28, 128, 3, 1), "k5_b256": (256, 1, 28, 20, 5, 0),
}
MATMUL_H100 = {"fp32_1024": (1024, 1024, 1024, False), "fp32_4096": (4096, 4096, 4096, False),
               "fp32_8192": (8192, 8192, 8192, False), "fc1_fwd_b64": (64, 128, 3136, True),
               "fc1_fwd_b1024": (1024, 128, 3136, True)}
CNN_PARAMETERS = [(32, 1, 3, 3), (32,), (64, 32, 3, 3), (64,), (128, 3136), (128,), (10, 128), (10,)]


def recorded_points():
    """(card, family, name, measured ms, what to run) of every usable recorded time."""
    points = []
    with open(H100_RUN) as f:
        h100 = json.load(f)
    for case, (n, c, h, k, r, pad) in CONV_LAYERS.items():
        for version, timing in h100["conv"][case]["versions"].items():
            for pass_name, ms in timing["ms"].items():
                points.append(("H100 SXM", "conv", f"{case} {version} {pass_name}", ms,
                               ("conv", n, c, h, k, r, pad, version, pass_name)))
    for case, (m, n, k, trans_b) in MATMUL_H100.items():
        points.append(("H100 SXM", "matmul", f"{case} tiled", h100["matmul"][case]["pyfast_ms"],
                       ("matmul", m, n, k, False, trans_b, "tiled")))
    with open(H200_RUN) as f:
        h200 = json.load(f)["families"]
    for row in h200["matmul"]:
        if row.get("version") in ("simple", "tiled") and row.get("correct"):
            points.append(("H200", "matmul", f"{row['case']} {row['version']}", row["ms"],
                           ("matmul", row["m"], row["n"], row["k"], row["trans_a"], row["trans_b"], row["version"])))
    for row in h200["elementwise"]:
        points.append(("H200", "elementwise", f"{row['case']} {row['op']}", row["ms"],
                       ("elementwise", row["op"], tuple(row["shape"]))))
    for row in h200["optim"]:
        if row["case"].startswith("cnn"):  # the 4 x 1e8 cases need 6 GB of host memory per array set
            points.append(("H200", "optim", f"{row['case']} {row['op']}", row["ms"], ("optim", row["op"])))
    return points


def _run(what):
    """Runs the op of a point once on the emulator's arrays (values do not matter to the counts)."""
    import cupy

    from pyfast import ops

    def ones(*shape):
        return cupy.ones(shape, cupy.float32)

    kind = what[0]
    if kind == "conv":
        _, n, c, h, k, r, pad, version, pass_name = what
        x, w = ones(n, c, h, h), ones(k, c, r, r)
        p = h + 2 * pad - r + 1
        if pass_name == "fwd":
            ops.conv2d(x, w, ones(k), padding=pad, version=version)
        elif pass_name == "dgrad":
            ops.conv2d_backward_input(ones(n, k, p, p), w, x.shape, padding=pad, version=version)
        else:
            ops.conv2d_backward_weight(ones(n, k, p, p), x, w.shape, padding=pad, version=version, bias=True)
    elif kind == "matmul":
        _, m, n, k, trans_a, trans_b, version = what
        a = ones(*((k, m) if trans_a else (m, k)))
        b = ones(*((n, k) if trans_b else (k, n)))
        ops.matmul(a, b, trans_a=trans_a, trans_b=trans_b, version=version, plan=(-1, 1))
    elif kind == "elementwise":
        _, op, shape = what
        x = ones(*shape)
        if op == "relu":
            ops.relu(x)
        elif op == "relu_backward":
            ops.relu_backward(x, ones(*shape))
        elif op == "add_bias":
            ops.add_bias(x, ones(shape[1]))
        else:
            ops.bias_grad(x)
    elif kind == "optim":
        params = [ones(*s) for s in CNN_PARAMETERS]
        grads = [ones(*s) for s in CNN_PARAMETERS]
        if what[1] == "adamw":
            ops.adam_step(params, grads, [ones(*s) for s in CNN_PARAMETERS], [ones(*s) for s in CNN_PARAMETERS],
                          step=1, weight_decay=0.01)
        else:
            ops.sgd_step(params, grads, lr=0.1, momentum=0.9, velocity=[ones(*s) for s in CNN_PARAMETERS])
    else:
        raise ValueError(what)


def profile_points(sample_blocks=3, log=print):
    """Profiles every recorded point; writes calibration.json."""
    from pyfast.profile import counters, sass

    kernels = sass.kernels("90")
    stored = []
    for card, family, name, ms, what in recorded_points():
        start = time.perf_counter()
        _, launches = counters.record(_run, what, sample_blocks=sample_blocks, run_sampled_only=True)
        launch_features = []
        for launch in launches:
            kernel_sass = kernels.get(sass.canonical(launch.kernel))
            launch_features.append(model.features(launch, kernel_sass).to_json())
        stored.append({"card": card, "family": family, "name": name, "measured_ms": ms,
                       "launches": launch_features})
        log(f"{card:9s} {family:11s} {name:40s} {len(launches)} launches, {time.perf_counter() - start:5.1f} s")
    with open(POINTS_FILE, "w") as f:
        json.dump({"about": "Recorded GPU times with the profiler's features of the same ops (pyfast.profile."
                            "calibration); regenerate with python -m pyfast.profile calibrate profile",
                   "sample_blocks": sample_blocks, "points": stored}, f, indent=0)
        f.write("\n")
    return stored


def load_points(path=POINTS_FILE):
    with open(path) as f:
        data = json.load(f)
    for p in data["points"]:
        p["launches"] = [model.LaunchFeatures.from_json(launch) for launch in p["launches"]]
    return data["points"]


def errors(points, params, cards):
    """Relative errors (modelled / measured - 1) of the points."""
    return np.array([model.op_time(p["launches"], cards["cards"][p["card"]], params) / (p["measured_ms"] * 1e-3) - 1
                     for p in points])


OUTLIER = math.log(1.5)  # a point off by more than 50% weighs as one off by 50% (robust to the few the model misses)


def _loss(points, params, cards):
    return float(np.mean(np.minimum(np.abs(np.log1p(errors(points, params, cards))), OUTLIER)))


BOUNDS = {"issue_efficiency": (0.2, 1.0), "latency_cycles": (1.0, 64.0), "ffma_ilp": (0.01, 32.0),
          "bandwidth_efficiency": (0.3, 1.0),
          "sm_bandwidth_gbps": (5.0, 500.0), "memory_latency_cycles": (1.0, 2000.0),
          "l2_gbps": (1000.0, 1e6), "launch_us": (0.5, 20.0)}


def fit(points, cards, start=None, rounds=6, seed=0):
    """Parameters minimising the mean |log(modelled / measured)|: random starts, then coordinate
    search on a log scale within BOUNDS (no SciPy: the library depends on NumPy alone)."""
    rng = np.random.default_rng(seed)
    # A parameter new to the model starts where its term never binds.
    best = {"memory_latency_cycles": BOUNDS["memory_latency_cycles"][0], "l2_gbps": BOUNDS["l2_gbps"][1]} | dict(
        start or cards["parameters"])
    best_loss = _loss(points, best, cards)
    for _ in range(40):
        trial = {name: float(np.exp(rng.uniform(*np.log(BOUNDS[name])))) for name in PARAMETERS}
        loss = _loss(points, trial, cards)
        if loss < best_loss:
            best, best_loss = trial, loss
    # Each parameter over its whole range, the others held: a term that binds only past some value
    # (a latency that matters only when large) is found even from a start where it does not.
    for _ in range(2):
        for name in PARAMETERS:
            for value in np.exp(np.linspace(*np.log(BOUNDS[name]), 41)):
                trial = dict(best, **{name: float(value)})
                loss = _loss(points, trial, cards)
                if loss < best_loss - 1e-12:
                    best, best_loss = trial, loss
    step = 0.5
    for _ in range(rounds * 10):
        improved = False
        for name in PARAMETERS:
            for factor in (math.exp(step), math.exp(-step)):
                trial = dict(best)
                low, high = BOUNDS[name]
                trial[name] = min(max(best[name] * factor, low), high)
                loss = _loss(points, trial, cards)
                if loss < best_loss - 1e-12:
                    best, best_loss, improved = trial, loss, True
        if not improved:
            step /= 2
            if step < 1e-3:
                break
    return best


def summary(errs):
    a = np.abs(errs)
    return {"points": int(len(a)), "median": float(np.median(a)) if len(a) else None,
            "worst": float(np.max(a)) if len(a) else None,
            "within_30": float(np.mean(a <= 0.3)) if len(a) else None}


def evaluate(points, cards):
    """{"all": summary, family: {"fitted": summary, "left_out": summary}}: each family's errors with
    the parameters fitted on every point, and with those fitted without the family."""
    params = fit(points, cards)
    report = {"parameters": params, "all": summary(errors(points, params, cards))}
    left_out = []
    for family in sorted({p["family"] for p in points}):
        inside = [p for p in points if p["family"] == family]
        others = [p for p in points if p["family"] != family]
        without = fit(others, cards, start=params)
        left_out.append(errors(inside, without, cards))
        report[family] = {"fitted": summary(errors(inside, params, cards)), "left_out": summary(left_out[-1])}
    report["all"]["left_out"] = summary(np.concatenate(left_out))
    return report


def table(report):
    def pct(x):
        return "-" if x is None else f"{100 * x:.0f}%"

    lines = ["| family | points | median error | worst | within 30% | left out: median | left out: worst |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for family, entry in report.items():
        if family in ("parameters", "all"):
            continue
        f, lo = entry["fitted"], entry["left_out"]
        lines.append(f"| {family} | {f['points']} | {pct(f['median'])} | {pct(f['worst'])} | {pct(f['within_30'])} "
                     f"| {pct(lo['median'])} | {pct(lo['worst'])} |")
    a = report["all"]
    lo = a.get("left_out") or {"median": None, "worst": None}
    lines.append(f"| all | {a['points']} | {pct(a['median'])} | {pct(a['worst'])} | {pct(a['within_30'])} "
                 f"| {pct(lo['median'])} | {pct(lo['worst'])} |")
    return "\n".join(lines)


def main(argv):
    if argv[:1] == ["profile"]:
        profile_points()
        return 0
    if argv[:1] == ["fit"]:
        points, cards = load_points(), model.load_cards()
        report = evaluate(points, cards)
        cards["parameters"] = {k: round(v, 4) for k, v in report["parameters"].items()}
        cards["fit"] = {"points": len(points), "median_error": report["all"]["median"],
                        "within_30": report["all"]["within_30"],
                        "left_out_median_error": report["all"]["left_out"]["median"],
                        "by": "python -m pyfast.profile calibrate fit",
                        "date": time.strftime("%Y-%m-%d")}
        with open(model.CARDS_FILE, "w") as f:
            json.dump(cards, f, indent=1)
            f.write("\n")
        print(table(report))
        print("parameters:", cards["parameters"])
        errs = errors(points, cards["parameters"], cards)
        print("points off by more than 30%:")
        for err, p in sorted(zip(errs, points), key=lambda x: -abs(x[0])):
            if abs(err) > 0.3:
                print(f"  {100 * err:+6.0f}%  {p['card']} {p['family']} {p['name']}")
        return 0
    print(__doc__.strip().splitlines()[0], file=sys.stderr)
    print("usage: python -m pyfast.profile calibrate (profile|fit)", file=sys.stderr)
    return 2

