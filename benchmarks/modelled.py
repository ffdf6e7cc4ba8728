"""Modelled times of what no GPU has measured yet, on the profiled emulator: the cases
benchmarks/NOTES.md predicted since 1df731c (tiled convolution per pass, conv + ReLU + pool,
pooling v1, cross-entropy v1, split-K by rule) and the CNN training step at batch 64 / 256 / 1024,
kernel by kernel (the conv versions version=None picks today, and the tiled ones at 64 and 1024),
and at 64 and 1024 as a PyTorch model with pyfast.torch's layers.

    python -m benchmarks.modelled          # reruns itself on the profiled emulator (built if needed)

Each case runs once with a few sampled blocks per launch (the rest skipped: the results are not
computed, the counts are scaled), and pyfast.profile.model turns each launch's counts into a time
per card. Every figure is "modelled (<model>, <card>)": written to
benchmarks/results/modelled/<model>/modelled.json, apart from every measured result, and never a
measurement.
"""

import json
import os
import subprocess
import sys

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "modelled")
CARDS = ("H100 SXM", "H200")


def cases():
    """(family, case, callable) of every modelled case (arrays of ones: values do not change the
    counts of these kernels, except pooling's winners, which move no bytes)."""
    import cupy

    from pyfast import nn, ops, optim, train

    def ones(*shape):
        return cupy.ones(shape, cupy.float32)

    def conv_pass(n, c, h, k, r, pad, pass_name, version="tiled"):
        x, w, p = ones(n, c, h, h), ones(k, c, r, r), h + 2 * pad - r + 1
        if pass_name == "forward":
            return lambda: ops.conv2d(x, w, ones(k), padding=pad, version=version, activation="relu")
        dy = ones(n, k, p, p)
        if pass_name == "input gradient":
            return lambda: ops.conv2d_backward_input(dy, w, x.shape, padding=pad, version=version)
        return lambda: ops.conv2d_backward_weight(dy, x, w.shape, padding=pad, version=version, bias=True)

    found = []
    layers = {"1->32 28x28 b1024": (1024, 1, 28, 32, 3, 1), "32->64 14x14 b1024": (1024, 32, 14, 64, 3, 1),
              "5x5 1->20 b256": (256, 1, 28, 20, 5, 0), "128->128 28x28 b128": (128, 128, 28, 128, 3, 1)}
    for name, layer in layers.items():
        for pass_name in ("forward", "input gradient", "weight gradient"):
            found.append(("conv tiled", f"{name} {pass_name}", conv_pass(*layer, pass_name)))
    x1, w1 = ones(1024, 1, 28, 28), ones(32, 1, 3, 3)
    found.append(("conv + ReLU + pool", "1->32 b1024 tiled", lambda: ops.conv2d_max_pool2d(
        x1, w1, ones(32), padding=1, activation="relu", version="tiled")))
    x2, w2 = ones(1024, 32, 14, 14), ones(64, 32, 3, 3)
    found.append(("conv + ReLU + pool", "32->64 b1024 tiled", lambda: ops.conv2d_max_pool2d(
        x2, w2, ones(64), padding=1, activation="relu", version="tiled")))
    big = ones(256, 64, 112, 112)
    pooled, indices = ops.max_pool2d(big, 2, return_indices=True)
    found.append(("pooling v1", "max 2x2 256x64x112x112 forward",
                  lambda: ops.max_pool2d(big, 2, return_indices=True)))
    found.append(("pooling v1", "max 2x2 backward (window, relu_output)", lambda: ops.max_pool2d_backward(
        pooled, indices, big.shape, 2, relu_output=pooled)))
    found.append(("pooling v1", "avg 2x2 forward", lambda: ops.avg_pool2d(big, 2)))
    found.append(("pooling v1", "avg 2x2 backward", lambda: ops.avg_pool2d_backward(pooled, big.shape, 2)))
    for rows, classes in ((1048576, 10), (65536, 1000)):
        logits, labels = ones(rows, classes), cupy.zeros(rows, cupy.int64)
        found.append(("cross-entropy v1", f"{rows} x {classes}",
                      lambda logits=logits, labels=labels: ops.softmax_cross_entropy(logits, labels, validate=False)))
    for batch in (64, 1024):
        x, w = ones(batch, 3136), ones(128, 3136)
        found.append(("split-K by rule", f"fc1 forward b{batch}", lambda x=x, w=w: ops.matmul(x, w, trans_b=True)))
        found.append(("split-K by rule", f"fc1 forward b{batch}, one slice",
                      lambda x=x, w=w: ops.matmul(x, w, trans_b=True, plan=(-1, 1))))

    for batch, version in ((64, None), (256, None), (1024, None), (64, "tiled"), (1024, "tiled")):
        model = train.cnn_model("cuda", seed=0, conv_version=version)
        loss, opt = nn.CrossEntropyLoss(backend="cuda"), optim.Adam(model.parameters(), lr=1e-3)
        xb, yb = ones(batch, 1, 28, 28), cupy.zeros(batch, cupy.int64)

        def step(model=model, loss=loss, opt=opt, xb=xb, yb=yb):
            value, grad = loss(model.forward(xb), yb)
            model.backward(grad)
            opt.step()

        found.append(("CNN step", f"batch {batch}" + (f", conv version {version}" if version else ""), step))
    found.extend(torch_cases())
    return found


def torch_cases():
    """The same step with the PyTorch model's layers swapped for pyfast.torch's (bench_train's
    "pyfast.torch layers in PyTorch" case), CPU tensors on the emulator: pyfast's launches only;
    PyTorch's own ops in the step (the loss gradient's scaling) are not modelled. None without
    PyTorch."""
    try:
        import torch
    except ImportError:
        return []
    from benchmarks.bench_train import pyfast_torch_step, torch_cnn_layers

    found = []
    for batch in (64, 1024):
        torch.manual_seed(0)
        net = torch_cnn_layers(torch)
        _, step = pyfast_torch_step(torch, net, torch.ones(batch, 1, 28, 28), torch.zeros(batch, dtype=torch.int64))
        found.append(("CNN step", f"batch {batch}, pyfast.torch layers", step))
    return found


def run(sample_blocks=3, log=print):
    from pyfast.profile import counters, model, report, sass

    cards = model.load_cards()
    rows, step_lines = [], {}
    for family, case, fn in cases():
        if family == "CNN step":
            counters.record(fn, sample_blocks=sample_blocks)  # the first step allocates, checks labels
        _, launches = counters.record(fn, sample_blocks=sample_blocks, run_sampled_only=True)
        row = {"family": family, "case": case, "launches": []}
        totals = dict.fromkeys(CARDS, 0.0)
        for launch in launches:
            features = model.features(launch, sass.for_launch(launch))
            entry = {"kernel": launch.short_name, "grid": launch.blocks, "threads": launch.threads_per_block}
            for card in CARDS:
                seconds, bound, _ = model.launch_time(features, cards["cards"][card], cards["parameters"])
                entry[f"{card} us"], entry[f"{card} bound"] = seconds * 1e6, bound
                totals[card] += seconds
            row["launches"].append(entry)
        for card in CARDS:
            row[f"{card} ms"] = totals[card] * 1e3
        rows.append(row)
        if family == "CNN step":
            step_lines[case] = report.worst_lines(launches, 5)
        log(f"{family:20s} {case:42s} " + "  ".join(f"{model.label(c)}: {row[c + ' ms']:.3f} ms" for c in CARDS))
    os.makedirs(os.path.join(RESULTS, model.MODEL), exist_ok=True)
    path = os.path.join(RESULTS, model.MODEL, "modelled.json")
    with open(path, "w") as f:
        json.dump({"label": f"modelled ({model.MODEL}, per card): not measurements", "model": model.MODEL,
                   "parameters": cards["parameters"], "rows": rows, "cnn_step_worst_lines": step_lines}, f, indent=1)
        f.write("\n")
    log(f"# wrote {path}")
    return rows


def main(argv=None):
    from pyfast.emulator import loader

    if not (loader.active() and loader.extension().emulator.profiled()):
        from pyfast.profile.__main__ import profiled_module

        env = dict(os.environ, PYFAST_EMULATE="1", PYFAST_EMU_MODULE=profiled_module())
        return subprocess.run([sys.executable, "-m", "benchmarks.modelled"], env=env,
                              cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))).returncode
    run()
    return 0


if __name__ == "__main__":
    import pyfast  # noqa: F401  (the emulator first, when asked for)

    sys.exit(main())
