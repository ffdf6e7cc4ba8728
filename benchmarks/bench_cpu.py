"""The README's CNN training step on the CPU: pyfast's CPU backend against PyTorch on the CPU, on
the same machine in the same run.

    python -m benchmarks.bench_cpu [--batch 64] [--rounds 7] [--steps 20] [--out DIR]

The step is what ``pyfast-train cnn`` runs per batch on a machine without a GPU: forward through
conv(1->32) ReLU maxpool, conv(32->64) ReLU maxpool, Linear(3136->128) ReLU, Linear(128->10),
cross-entropy, backward, Adam, on a batch of the bundled digits; PyTorch runs the same network
from the same weights (torch.nn layers, autograd, torch.optim.Adam), each with its own default
threads. Correctness first: from the same weights and batch, the losses and every gradient of
one step agree to float32 tolerance, else the run is refused. Timing: after a warm-up, rounds
alternate between the two (machine load hits both alike); a round times `steps` steps; the
figure is the median images/s over the rounds, the slowest and fastest round kept. Then the
time of each pyfast op in a step (where the step goes). Results:
benchmarks/results/cpu-<processor>-<date>/cpu_train.json; no GPU, CuPy or harness is needed.
"""

import argparse
import collections
import datetime
import json
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import source
from pyfast import nn, optim, train
from pyfast.testing import assert_close

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def processor_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(torch):
    measured = source.describe()
    info = {
        "device": f"CPU: {processor_name()}",
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": source.label(measured),
        "git_dirty": measured["dirty"],
    }
    try:
        from threadpoolctl import threadpool_info

        info["numpy_blas"] = [f"{p['internal_api']} {p.get('version')} ({p.get('architecture')}, "
                              f"{p['num_threads']} threads)" for p in threadpool_info() if p["user_api"] == "blas"]
    except ImportError:
        pass
    if torch is not None:
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    return info


def torch_cnn(torch, model):
    """The same network in PyTorch (CPU) with `model`'s weights."""
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
        torch.nn.Linear(3136, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    ours = [model.layers[i] for i in (0, 3, 7, 8)]
    theirs = [net[i] for i in (0, 3, 7, 9)]
    with torch.no_grad():
        for a, b in zip(ours, theirs):
            b.weight.copy_(torch.from_numpy(a.weight))
            b.bias.copy_(torch.from_numpy(a.bias))
    return net, theirs


class PyfastStep:
    def __init__(self, batch):
        self.model = train.cnn_model("numpy", seed=0)
        self.loss = nn.CrossEntropyLoss(backend=self.model.backend)
        self.optimizer = optim.Adam(self.model.parameters(), lr=1e-3)
        self.x, self.y = batch

    def __call__(self):
        output = self.model.forward(self.x)
        value, grad = self.loss(output, self.y)
        self.model.backward(grad)
        self.optimizer.step()
        return value


class TorchStep:
    def __init__(self, torch, model, batch):
        self.net, self.layers = torch_cnn(torch, model)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=1e-3)
        self.functional = torch.nn.functional
        self.x, self.y = (torch.from_numpy(part) for part in batch)

    def __call__(self):
        self.optimizer.zero_grad()
        value = self.functional.cross_entropy(self.net(self.x), self.y)
        value.backward()
        self.optimizer.step()
        return value


def check_same_step(pyfast_step, torch, batch):
    """One forward and backward of each from the same weights: the losses and every gradient."""
    net, layers = torch_cnn(torch, pyfast_step.model)
    model = pyfast_step.model
    output = model.forward(batch[0])
    value, grad = pyfast_step.loss(output, batch[1])
    model.backward(grad)
    expected = torch.nn.functional.cross_entropy(net(torch.from_numpy(batch[0])), torch.from_numpy(batch[1]))
    expected.backward()
    assert_close(value, expected.item(), atol=1e-5, name="loss")
    for i, (ours, theirs) in zip((0, 3, 7, 8), zip([model.layers[i] for i in (0, 3, 7, 8)], layers)):
        for name, grad_ours, grad_theirs in (("weight", ours.grad_weight, theirs.weight.grad),
                                             ("bias", ours.grad_bias, theirs.bias.grad)):
            scale = float(grad_theirs.abs().max()) or 1.0
            assert_close(grad_ours, grad_theirs.numpy(), atol=1e-4 * scale, rtol=1e-3, name=f"layer {i} {name} grad")


def images_per_s(step, batch_size, steps):
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return batch_size * steps / (time.perf_counter() - start)


def op_profile(pyfast_step, steps):
    """Milliseconds per step in each pyfast op (the backend's op functions wrapped with timers)."""
    ops = pyfast_step.model.backend.ops
    totals = collections.Counter()
    originals = {name: getattr(ops, name) for name in ops.__all__}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                totals[name] += time.perf_counter() - start
        return wrapper

    try:
        for name, fn in originals.items():
            setattr(ops, name, timed(name, fn))
        start = time.perf_counter()
        for _ in range(steps):
            pyfast_step()
        total = time.perf_counter() - start
    finally:
        for name, fn in originals.items():
            setattr(ops, name, fn)
    per_step = {name: seconds / steps * 1e3 for name, seconds in totals.most_common()}
    per_step["(outside the ops: layers, optimizer, Python)"] = total / steps * 1e3 - sum(per_step.values())
    return per_step


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="images per step (the CLI's default)")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds of each, alternating")
    parser.add_argument("--steps", type=int, default=20, help="steps per round")
    parser.add_argument("--out", help="directory for the JSON (default benchmarks/results/cpu-<processor>-<date>/)")
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        torch = None
        print("# PyTorch is not installed (pip install 'pyfast[bench]'): timing pyfast alone", file=sys.stderr)
    train_set = train.load_image_data("digits")[0]
    batch = (train_set[0][: args.batch], train_set[1][: args.batch])
    info = machine_info(torch)
    print(f"# the CNN's training step at batch {args.batch} on {info['device']} ({info['cpu_count']} cores)")
    pyfast_step = PyfastStep(batch)
    if torch is not None:
        try:
            check_same_step(pyfast_step, torch, batch)
        except AssertionError as error:
            print(f"WRONG RESULT: pyfast's step differs from PyTorch's: {error}", file=sys.stderr)
            return 1
        print("# checked: one step from the same weights gives PyTorch's loss and gradients")
    steps = {"pyfast cpu": pyfast_step}
    if torch is not None:
        steps["torch cpu"] = TorchStep(torch, PyfastStep(batch).model, batch)
    for step in steps.values():
        images_per_s(step, args.batch, 3)  # warm-up: scratch memory, BLAS threads, allocator
    rates = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            rates[name].append(images_per_s(step, args.batch, args.steps))
    rows = [dict(case=f"cnn step b{args.batch}", op=name, images_per_s=statistics.median(r), slowest=min(r),
                 fastest=max(r), ms=args.batch / statistics.median(r) * 1e3, correct=True)
            for name, r in rates.items()]
    if torch is not None:
        rows[0].update(baseline="PyTorch CPU", baseline_ms=rows[1]["ms"],
                       ratio=rows[0]["images_per_s"] / rows[1]["images_per_s"])
    for row in rows:
        print(f"{row['op']:>10}: {row['images_per_s']:7.0f} images/s ({row['ms']:.1f} ms a step; rounds "
              f"{row['slowest']:.0f}-{row['fastest']:.0f})")
    if torch is not None:
        print(f"pyfast / PyTorch: {rows[0]['ratio']:.2f}")
    profile = op_profile(pyfast_step, args.steps)
    print("# pyfast's step by op (ms):")
    for name, ms in profile.items():
        print(f"  {ms:6.2f}  {name}")
    out = Path(args.out) if args.out else RESULTS_DIR / (
        "cpu-" + re.sub(r"[^a-z0-9]+", "-", processor_name().lower()).strip("-") + f"-{info['date'][:10]}")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "cpu_train.json"
    path.write_text(json.dumps({"family": "cpu_train", "info": info, "rows": rows, "pyfast_ms_by_op": profile},
                               indent=1) + "\n")
    print(f"# results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
