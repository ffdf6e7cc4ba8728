"""The two workloads end to end against PyTorch eager on the same GPU.

    python -m benchmarks.bench_train [--quick] [--out DIR]

linreg: the tutorial exactly (X (100, 2), y (100, 1), Linear(2, 1), MSE, SGD lr 0.01, 1000
epochs) from the same initial weights; wall time of the whole loop (synchronized at the
end) and the final losses, which must agree to 1e-5 relative. Two pyfast rows: "fused" (the
CLI's default on a GPU: the whole run in one launch, ops.linear_mse_sgd_fit) and "eager"
(one launch per op per step, the layer loop).
cnn: one training step (forward, cross-entropy, backward, Adam) of the CLI's network at
batch 64 / 256 / 1024, images per second, against PyTorch eager with cuDNN AND PyTorch with the
whole step captured as a CUDA graph (capturable Adam), both from the same weights and batch,
each checked for the same first loss; pyfast launched op by op, and replayed as a CUDA graph
(the trainer's default on a GPU, pyfast.graph) with each conv version and version=None; and
the PyTorch model itself with its layers swapped for pyfast.torch's (pyfast's kernels as custom
ops under PyTorch's autograd, pyfast's Adam) against the same model in PyTorch eager.
epoch: one whole epoch of fit() (the default path: data on the device, graphs) against a
PyTorch loop over the same host data (a host-to-device copy per batch, as a DataLoader-fed loop
does), on the digits at batch 64 and on 60000 synthetic 28x28 images at batch 256, images/s.
"""

import sys
import time

import cupy
import numpy as np

from benchmarks import harness
from pyfast import data as datasets
from pyfast import graph, nn, ops, optim, train


def linreg_pyfast(x, y, weight, bias, epochs=1000, lr=0.01, fused=True):
    backend = nn.get_backend("cuda")
    model = nn.Linear(x.shape[1], 1, backend=backend)
    model.weight[...] = backend.asarray(weight)
    model.bias[...] = backend.asarray(bias)
    loss, opt = nn.MSELoss(backend=backend), optim.SGD(model, lr=lr)
    xd, yd = backend.asarray(x), backend.asarray(y)
    cupy.cuda.get_current_stream().synchronize()
    start = time.perf_counter()
    if fused:
        losses = ops.linear_mse_sgd_fit(xd, yd, model.weight, model.bias, lr=lr, epochs=epochs)
        final = float(losses[-1])
    else:
        for _ in range(epochs):
            value, grad = loss(model.forward(xd), yd)
            model.backward(grad)
            opt.step()
        final = float(value)
    return time.perf_counter() - start, final


def linreg_torch(torch, x, y, weight, bias, epochs=1000, lr=0.01):
    model = torch.nn.Linear(x.shape[1], 1).cuda()
    with torch.no_grad():
        model.weight.copy_(torch.tensor(weight))
        model.bias.copy_(torch.tensor(bias))
    criterion, opt = torch.nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=lr)
    xt, yt = torch.tensor(x, device="cuda"), torch.tensor(y, device="cuda")
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(epochs):
        opt.zero_grad()
        loss = criterion(model(xt), yt)
        loss.backward()
        opt.step()
    final = loss.item()
    return time.perf_counter() - start, final


def torch_cnn_layers(torch):
    """The CLI's network in torch.nn, PyTorch's initial weights, on the CPU."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
        torch.nn.Linear(3136, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))


def torch_cnn(torch, model):
    """The same network in PyTorch with the same initial weights."""
    layers = model.layers
    net = torch_cnn_layers(torch).cuda()
    ours = [layers[0], layers[3], layers[7], layers[8]]
    theirs = [net[0], net[3], net[7], net[9]]
    with torch.no_grad():
        for a, b in zip(ours, theirs):
            b.weight.copy_(torch.from_dlpack(a.weight))
            b.bias.copy_(torch.from_dlpack(a.bias))
    return net


def torch_graph_step(torch, model, xt, yt):
    """PyTorch's whole step (forward, loss, backward, capturable Adam) captured as one CUDA graph,
    from pyfast's initial weights. Returns (first loss before any step, replay function)."""
    net = torch_cnn(torch, model)
    first = torch.nn.functional.cross_entropy(net(xt), yt).item()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, capturable=True)
    static_x, static_y = xt.clone(), yt.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on a side stream, as torch.cuda.graphs asks
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(net(static_x), static_y).backward()
            opt.step()
    torch.cuda.current_stream().wait_stream(side)
    graph_ = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph_):
        static_loss = torch.nn.functional.cross_entropy(net(static_x), static_y)
        static_loss.backward()
        opt.step()
    return first, graph_.replay


def pyfast_torch_step(torch, net, xt, yt):
    """The PyTorch model `net` with its modules swapped in place for pyfast.torch's layers (its
    kernels as PyTorch custom ops), pyfast's cross-entropy (no host read of the label check) and
    pyfast's Adam: (first loss before any step, one training step)."""
    import pyfast.torch as pt

    report = pt.nn.swap_modules(net)
    if report.kept:
        raise RuntimeError(f"pyfast.torch could not take every layer: {report}")
    loss_fn = pt.nn.CrossEntropyLoss(validate=False)
    opt = pt.optim.Adam(net.parameters(), lr=1e-3)
    first = loss_fn(net(xt), yt).item()

    def step():
        opt.zero_grad()
        loss_fn(net(xt), yt).backward()
        opt.step()

    return first, step


def epoch_rows(torch, rows, quick):
    """One epoch of fit() against a PyTorch loop over the same host arrays; returns failures."""
    failures = 0
    cases = [("digits", *datasets.load_digits(), 64)]
    if not quick:
        cases.append(("synthetic 60000", *datasets.synthetic_images(60000, seed=0), 256))
    for name, x, y, batch in cases:
        x, y = np.ascontiguousarray(x, np.float32), np.ascontiguousarray(y, np.int64)
        model = train.cnn_model("cuda", seed=0)
        loss, opt = nn.CrossEntropyLoss(backend="cuda"), optim.Adam(model, capturable=True)
        train.fit(model, loss, opt, (x[:batch * 4], y[:batch * 4]), epochs=1, batch_size=batch, progress=False,
                  log=None)  # warm-up: kernels loaded, graphs of this shape captured once
        history = train.fit(model, loss, opt, (x, y), epochs=1, batch_size=batch, progress=False, log=None)
        row = dict(case=f"epoch {name} b{batch} (fit)", batch=batch, images_per_s=history["samples_per_s"][-1],
                   ms=len(x) / history["samples_per_s"][-1] * 1e3)
        if torch is not None:
            net = torch_cnn(torch, train.cnn_model("cuda", seed=0))
            torch_opt = torch.optim.Adam(net.parameters(), lr=1e-3)
            order = np.random.default_rng(0).permutation(len(x))

            def torch_epoch(count):
                for start in range(0, count, batch):
                    index = order[start: start + batch]
                    xt = torch.from_numpy(x[index]).cuda(non_blocking=False)
                    yt = torch.from_numpy(y[index]).cuda(non_blocking=False)
                    torch_opt.zero_grad()
                    torch.nn.functional.cross_entropy(net(xt), yt).backward()
                    torch_opt.step()
                torch.cuda.synchronize()

            torch_epoch(batch * 4)
            start = time.perf_counter()
            torch_epoch(len(x))
            seconds = time.perf_counter() - start
            row.update(torch_ms=seconds * 1e3, torch_images_per_s=len(x) / seconds,
                       ratio=row["images_per_s"] / (len(x) / seconds), correct=bool(np.isfinite(history["loss"][-1])))
            failures += not row["correct"]
        rows.append(row)
    return failures


def graph_row(rows, eager_row, batch, xb, yb, conv_version=None):
    """The same step replayed as a CUDA graph (what fit() does on the GPU), with the given conv
    kernels. Checked first: the replayed second step's loss must equal the eager second step's
    bit for bit. Returns 1 for a wrong result."""
    losses = []
    for use_graph in (False, True):
        model = train.cnn_model("cuda", seed=0, conv_version=conv_version)
        loss, opt = nn.CrossEntropyLoss(backend="cuda"), optim.Adam(model, capturable=True)
        stream = cupy.cuda.Stream(non_blocking=True)
        with stream:
            xs, ys = xb.copy(), yb.copy()

            def step(model=model, loss=loss, opt=opt, xs=xs, ys=ys):
                value, grad = loss(model.forward(xs), ys)
                model.backward(grad)
                opt.step()
                return value

            step()  # the eager first step of this shape (buffers, label check)
            if not use_graph:
                losses.append(float(step()))
                continue
            captured = graph.CapturedStep(step, stream)
            captured.replay()
            losses.append(float(captured.result))
            label = conv_version or "auto"
            row = dict(case=f"cnn step b{batch} (graph, {label} conv)", batch=batch, first_loss=losses[-1])
            if losses[0] != losses[1]:
                print(f"WRONG RESULT: graph replay loss {losses[1]!r} != eager {losses[0]!r}", file=sys.stderr)
                rows.append(dict(row, correct=False))
                return 1
            t = harness.time_back_to_back(captured.replay, [()])
    row.update(ms=t.median_ms, images_per_s=batch / (t.median_ms * 1e-3), correct=True)
    if eager_row.get("torch_ms"):
        row.update(torch_ms=eager_row["torch_ms"], torch_images_per_s=eager_row["torch_images_per_s"],
                   ratio=eager_row["torch_ms"] / t.median_ms)
    if eager_row.get("torch_graph_ms"):
        row.update(torch_graph_ms=eager_row["torch_graph_ms"], ratio_graph=eager_row["torch_graph_ms"] / t.median_ms)
    rows.append(row)
    return 0


def main(argv=None):
    args = harness.parse_args(__doc__, argv)
    info = harness.device_info()
    torch = harness.torch_or_none()
    print(f"# training on {info['device']}")
    rows, failures = [], 0

    x, y = datasets.synthetic_regression(100, 2, seed=0)
    init = nn.Linear(2, 1, rng=np.random.default_rng(0), backend="numpy")
    torch_s = torch_loss = None
    if torch is not None:
        linreg_torch(torch, x, y, init.weight, init.bias, epochs=10)
        torch_s, torch_loss = min(linreg_torch(torch, x, y, init.weight, init.bias) for _ in range(3))
    for mode in ("fused", "eager"):
        fused = mode == "fused"
        linreg_pyfast(x, y, init.weight, init.bias, epochs=10, fused=fused)  # warm-up
        ours_s, ours_loss = min(linreg_pyfast(x, y, init.weight, init.bias, fused=fused) for _ in range(3))
        row = dict(case=f"linreg 1000 epochs ({mode})", ms=ours_s * 1e3, final_loss=ours_loss)
        if torch is not None:
            same = abs(ours_loss - torch_loss) <= 1e-5 * abs(torch_loss)
            failures += not same
            row.update(torch_ms=torch_s * 1e3, torch_final_loss=torch_loss, ratio=torch_s / ours_s, correct=same)
        rows.append(row)

    for batch in ([64, 1024] if args.quick else [64, 256, 1024]):
        backend = nn.get_backend("cuda")
        model = train.cnn_model(backend, seed=0)
        loss, opt = nn.CrossEntropyLoss(backend=backend), optim.Adam(model)
        rng = cupy.random.default_rng(batch)
        xb = rng.standard_normal((batch, 1, 28, 28), dtype=cupy.float32)
        yb = rng.integers(0, 10, batch, dtype=cupy.int64)

        def step():
            value, grad = loss(model.forward(xb), yb)
            model.backward(grad)
            opt.step()

        row = dict(case=f"cnn step b{batch}", batch=batch)
        if torch is not None:
            net = torch_cnn(torch, model)
            xt, yt = torch.from_dlpack(xb), torch.from_dlpack(yb)
            torch_opt = torch.optim.Adam(net.parameters(), lr=1e-3)
            ours_first = float(loss(model.forward(xb), yb)[0])
            theirs_first = torch.nn.functional.cross_entropy(net(xt), yt).item()
            same = abs(ours_first - theirs_first) <= 1e-4 * abs(theirs_first)
            failures += not same

            def torch_step():
                torch_opt.zero_grad()
                torch.nn.functional.cross_entropy(net(xt), yt).backward()
                torch_opt.step()

            base = harness.time_back_to_back(torch_step, [()])
            row.update(first_loss=ours_first, torch_first_loss=theirs_first, correct=same, torch_ms=base.median_ms,
                       torch_images_per_s=batch / (base.median_ms * 1e-3))
            layers_first, layers_step = pyfast_torch_step(torch, torch_cnn(torch, train.cnn_model(backend, seed=0)),
                                                          xt, yt)
            layers_same = abs(layers_first - theirs_first) <= 1e-4 * abs(theirs_first)
            failures += not layers_same
            layers = harness.time_back_to_back(layers_step, [()])
            rows.append(dict(case=f"cnn step b{batch} (pyfast.torch layers in PyTorch)", batch=batch,
                             first_loss=layers_first, correct=layers_same, ms=layers.median_ms,
                             images_per_s=batch / (layers.median_ms * 1e-3), torch_ms=base.median_ms,
                             torch_images_per_s=batch / (base.median_ms * 1e-3),
                             ratio=base.median_ms / layers.median_ms))
            graph_first, torch_replay = torch_graph_step(torch, train.cnn_model(backend, seed=0), xt, yt)
            graph_same = abs(ours_first - graph_first) <= 1e-4 * abs(graph_first)
            failures += not graph_same
            graph_base = harness.time_back_to_back(torch_replay, [()])
            rows.append(dict(case=f"cnn step b{batch} (PyTorch whole-step CUDA graph)", batch=batch,
                             first_loss=graph_first, correct=graph_same, ms=graph_base.median_ms,
                             images_per_s=batch / (graph_base.median_ms * 1e-3)))
            row["torch_graph_ms"] = graph_base.median_ms
        t = harness.time_back_to_back(step, [()])
        row.update(ms=t.median_ms, images_per_s=batch / (t.median_ms * 1e-3))
        if "torch_ms" in row:
            row["ratio"] = row["torch_ms"] / t.median_ms
        rows.append(row)
        for conv_version in (*ops.CONV2D_VERSIONS, None):
            failures += graph_row(rows, row, batch, xb, yb, conv_version)
    failures += epoch_rows(torch, rows, args.quick)
    columns = [("case", "case", "{}"), ("ms", "ms", "{:.3f}"), ("images/s", "images_per_s", "{:.0f}"),
               ("torch ms", "torch_ms", "{:.3f}"), ("torch images/s", "torch_images_per_s", "{:.0f}"),
               ("vs torch", "ratio", "{:.2f}"), ("torch graph ms", "torch_graph_ms", "{:.3f}"),
               ("vs torch graph", "ratio_graph", "{:.2f}"), ("same loss", "correct", "{}")]
    return harness.finish("train", info, rows, columns, args.out, failures)


if __name__ == "__main__":
    sys.exit(main())
