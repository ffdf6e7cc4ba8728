"""The command line, pyfast-train (python -m pyfast.train): the linreg and cnn commands, their
parser, the --data specs and the checks every argument, file and checkpoint passes before
training starts."""

import argparse
import importlib.util
import math
import os
import sys
import tempfile

import numpy as np

from pyfast import _checks, nn
from pyfast import data as datasets
from pyfast.errors import TrainingDiverged
from pyfast.optim import SGD, Adam, CosineAnnealingLR, StepLR
from pyfast.train.checkpoints import load_checkpoint, save
from pyfast.train.loop import History, evaluate, fit
from pyfast.train.models import cnn_model
from pyfast.train.plots import plot_history


# The CLI checks everything it can before training starts: argument values in argparse (its usage,
# one line and exit code 2), then files, folders, data, backend and checkpoint in a preparation
# step whose errors are one line and exit code 2.
def _backend_from_args(name, err):
    if name is None and nn.default_backend_name() == "numpy":
        from pyfast._device import unavailable_reason

        print(f"pyfast: {unavailable_reason()}; using the NumPy backend", file=err)
    return nn.get_backend(name)


def _output_path(option, path, suffixes):
    """`path` for an output file the run writes later, checked now so that a run never ends in a
    failed write: without a suffix it gets suffixes[0]; a suffix the writer cannot write is
    refused (never silently changed); its folder must exist and take a new file (tried)."""
    if os.path.isdir(path):
        raise ValueError(f"{option}: {path} is a folder; give a file name")
    suffix = os.path.splitext(path)[1]
    if not suffix:
        path += suffixes[0]
    elif suffix.lower() not in suffixes:
        raise ValueError(f"{option}: cannot write a {suffix} file; give a name ending in {', '.join(suffixes)}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"{option}: the folder {folder} does not exist")
    try:  # access() can say yes where creating a file fails (read-only mounts, /sys as root)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".pyfast-write-check-"):
            pass
    except OSError as error:
        raise ValueError(f"{option}: cannot write in the folder {folder} ({error.strerror or error})") from None
    return path


def _plot_suffixes():
    """The file types matplotlib writes here, .png first (the default)."""
    from matplotlib.figure import Figure

    types = {f".{name}" for name in Figure().canvas.get_supported_filetypes()}
    return (".png", *sorted(types - {".png"}))


def _prepare_linreg(args, out=None, err=None):
    out, err = out or sys.stdout, err or sys.stderr
    backend = _backend_from_args(args.backend, err)
    x, y = datasets.synthetic_regression(args.samples, args.features, seed=args.seed)
    model = nn.Linear(args.features, 1, rng=np.random.default_rng(args.seed), backend=backend)
    # The one-launch run holds the data in one block's shared memory: bigger runs go op by op.
    fits_one_launch = _checks.linear_fit_floats(args.samples, args.features, 1) <= _checks.LINEAR_FIT_MAX_FLOATS
    fused = backend.name == "cuda" and not args.eager and fits_one_launch
    return argparse.Namespace(args=args, out=out, backend=backend, data=(x, y), model=model, fused=fused)


def _train_linreg(plan):
    args, out, backend, model = plan.args, plan.out, plan.backend, plan.model
    loss = nn.MSELoss(backend=backend)
    optimizer = SGD(model, lr=args.lr)
    x_dev, y_dev = (backend.asarray(part) for part in plan.data)
    report = lambda epoch, value: print(f"Epoch {epoch}, loss={value:.6f}", file=out)  # noqa: E731
    def check(epoch, value):  # a diverged run stops at its first non-finite loss it sees
        if not math.isfinite(value):
            raise TrainingDiverged(epoch, value, args.lr)

    if plan.fused:
        # The whole run in one launch, the same float32 math as the loop below (one read at the end).
        losses = backend.to_numpy(backend.ops.linear_mse_sgd_fit(x_dev, y_dev, model.weight, model.bias, lr=args.lr,
                                                                 epochs=args.epochs))
        for epoch in range(1, args.epochs + 1):
            check(epoch, float(losses[epoch - 1]))
            if epoch % 100 == 0 or epoch == args.epochs:
                report(epoch, float(losses[epoch - 1]))
    else:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # reported once, as TrainingDiverged
            for epoch in range(1, args.epochs + 1):
                value, grad = loss(model.forward(x_dev), y_dev)
                model.backward(grad)
                optimizer.step()
                # Each epoch's loss on the host is free; on the GPU it is read where it is printed.
                if backend.name == "numpy" or epoch % 100 == 0 or epoch == args.epochs:
                    check(epoch, float(value))
                if epoch % 100 == 0 or epoch == args.epochs:
                    report(epoch, float(value))
    x_test, y_test = datasets.synthetic_regression(10, args.features, seed=args.seed + 1)
    test_loss, _ = loss(model.forward(backend.asarray(x_test)), backend.asarray(y_test))
    print(f"Test loss: {float(test_loss):.6f}", file=out)
    return model, float(test_loss)


def run_linreg(args, out=None, err=None):
    """The linreg command on parsed `args`: (model, test loss). Prints to `out` (stdout), notices
    to `err` (stderr)."""
    return _train_linreg(_prepare_linreg(args, out, err))


DATA_SPECS = ("digits", "digits8", "synthetic", "mnist:PATH")


def load_image_data(spec, seed=0):
    """(train, val, test, stats) for --data: 'digits' (8x8 resized to 28x28), 'digits8',
    'synthetic', or 'mnist:PATH'; stats = {"mean", "std"} of the training images, with which
    every split is normalised (pass them to save() so inference can normalise alike). Each
    split is (images float32 (N, 1, H, W), labels int64 (N,)), both C-contiguous: a batch sliced
    from them goes to the model as it is."""
    if spec.startswith("mnist:"):
        (x_train, y_train), test = datasets.load_mnist(spec.split(":", 1)[1])
        train, val, _ = datasets.split(x_train, y_train, (0.9, 0.1, 0.0), seed=seed)
    else:
        if spec in ("digits", "digits8"):
            x, y = datasets.load_digits(28 if spec == "digits" else 8)
        elif spec == "synthetic":
            x, y = datasets.synthetic_images(seed=seed)
        else:
            raise ValueError(f"spec: expected one of {', '.join(DATA_SPECS)}, got {spec!r}")
        train, val, test = datasets.split(x, y, (0.8, 0.1, 0.1), seed=seed)
    x_train, mean, std = datasets.normalize(train[0])
    normalise = lambda part: (datasets.normalize(part[0], mean, std)[0], np.ascontiguousarray(part[1]))  # noqa: E731
    return (x_train, np.ascontiguousarray(train[1])), normalise(val), normalise(test), {"mean": mean, "std": std}


# What a resumed run must share with the run that wrote the checkpoint for the two to be one
# run (--epochs may grow, except under the cosine schedule, whose horizon it is).
RUN_SETTINGS = ("data", "seed", "limit", "batch_size", "augment", "lr", "lr_schedule", "lr_step_size", "lr_gamma",
                "lr_min")


def _run_settings(args):
    settings = {name: getattr(args, name) for name in RUN_SETTINGS}
    if args.lr_schedule == "cosine":
        settings["epochs"] = args.epochs
    return settings


def _scheduler(args, optimizer):
    if args.lr_schedule == "step":
        return StepLR(optimizer, args.lr_step_size, args.lr_gamma)
    if args.lr_schedule == "cosine":
        return CosineAnnealingLR(optimizer, args.epochs, args.lr_min)
    return None


def _flag(name):
    return "--" + name.replace("_", "-")


def _prepare_cnn(args, out=None, err=None):
    out, err = out or sys.stdout, err or sys.stderr
    save_path = _output_path("--save", args.save, (".npz",)) if args.save else None
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        raise ValueError("--plot: needs matplotlib (pip install 'pyfast[train]')")
    plot_path = _output_path("--plot", args.plot, _plot_suffixes()) if args.plot else None
    try:
        checkpoint = load_checkpoint(args.resume) if args.resume else None
    except OSError as error:  # missing, a folder, unreadable
        raise ValueError(f"--resume: cannot read {args.resume}: {error.strerror or error}") from None
    if checkpoint is not None:
        if checkpoint["epoch"] is None or checkpoint["optimizer"] is None or "run" not in checkpoint["metadata"]:
            raise ValueError(f"--resume: {args.resume} holds a model but not the state of a pyfast-train run (epoch, "
                             f"optimizer, settings): it was not written by 'pyfast-train cnn --save'")
        if checkpoint["epoch"] >= args.epochs:
            raise ValueError(f"--epochs: {args.resume} has already trained {checkpoint['epoch']} epochs; pass "
                             f"--epochs above {checkpoint['epoch']} to train more")
        saved = checkpoint["metadata"]["run"]
        differ = [f"{_flag(name)} {saved.get(name)!r} there, {value!r} here"
                  for name, value in _run_settings(args).items() if saved.get(name) != value]
        if differ:
            why = " (under --lr-schedule cosine, --epochs is where the schedule ends)" if "epochs" in saved and \
                saved["epochs"] != args.epochs else ""
            raise ValueError(f"--resume: {args.resume} comes from a run with other settings ({'; '.join(differ)}); "
                             f"resume with the settings it was trained with{why}")
    backend = _backend_from_args(args.backend, err)
    train, val, test, stats = load_image_data(args.data, seed=args.seed)
    if args.limit:
        train = (train[0][: args.limit], train[1][: args.limit])
    height, width = train[0].shape[2:]
    if height != width or height < 4:
        raise ValueError(f"--data: the CNN takes square images of at least 4x4 pixels (two 2x2 poolings); "
                         f"{args.data} holds {height}x{width} images")
    if args.augment >= min(height, width):
        raise ValueError(f"--augment: shifts of {args.augment} pixels would move a {height}x{width} image out of its "
                         f"frame; expected less than {min(height, width)}")
    model = cnn_model(backend, seed=args.seed, image_size=height, conv_version=args.conv_version)
    optimizer = Adam(model, lr=args.lr, capturable=backend.name == "cuda" and not args.no_graph)
    scheduler = _scheduler(args, optimizer)
    start, history = 0, None
    if checkpoint is not None:
        if checkpoint["metadata"].get("mean") != stats["mean"] or checkpoint["metadata"].get("std") != stats["std"]:
            raise ValueError(f"--resume: {args.resume} was trained on data normalised otherwise "
                             f"(mean {checkpoint['metadata'].get('mean')}, std {checkpoint['metadata'].get('std')})")
        try:
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(checkpoint["scheduler"])
        except (TypeError, ValueError) as error:
            raise ValueError(f"--resume: {args.resume} does not fit this command's model and optimizer: {error}") \
                from None
        start, history = checkpoint["epoch"], checkpoint["history"] or History()
    return argparse.Namespace(args=args, out=out, backend=backend, data=(train, val, test), stats=stats, model=model,
                              optimizer=optimizer, scheduler=scheduler, start=start, history=history,
                              save_path=save_path, plot_path=plot_path)


def _train_cnn(plan):
    args, out, backend, model, optimizer = plan.args, plan.out, plan.backend, plan.model, plan.optimizer
    train, val, test = plan.data
    print(f"data: {args.data}, {len(train[0])} train / {len(val[0])} validation / {len(test[0])} test images of "
          f"{train[0].shape[2]}x{train[0].shape[3]}; backend {backend.name}", file=out)
    if plan.start:
        print(f"resuming {args.resume} after epoch {plan.start}", file=out)
    loss = nn.CrossEntropyLoss(backend=backend)
    metadata = dict(plan.stats, run=_run_settings(args))

    def checkpoint(epoch, history):  # after every epoch: an interrupted run loses at most one
        if plan.save_path:
            save(model, plan.save_path, optimizer=optimizer, scheduler=plan.scheduler, epoch=epoch, history=history,
                 **metadata)
        plan.finished = epoch

    plan.finished = plan.start
    history = fit(model, loss, optimizer, train, val, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                  augment=args.augment, progress=not args.no_progress, log=lambda line: print(line, file=out),
                  graph=False if args.no_graph else None, scheduler=plan.scheduler, initial_epoch=plan.start,
                  history=plan.history, on_epoch_end=checkpoint)
    metrics = evaluate(model, loss, test, batch_size=args.batch_size)
    rates = history["samples_per_s"][plan.start:]  # the epochs this run trained
    if rates:
        seconds = sum(len(train[0]) / rate for rate in rates)
        print(f"trained {len(rates)} epochs in {seconds:.1f} s: {len(rates) * len(train[0]) / seconds:.0f} images/s, "
              f"{max(rates):.0f} in the fastest epoch", file=out)
    print(f"test accuracy {metrics['accuracy']:.4f} (loss {metrics['loss']:.4f})", file=out)
    if plan.save_path:
        print(f"saved {plan.save_path}", file=out)
    if plan.plot_path:
        plot_history(history, plan.plot_path)
        print(f"plotted {plan.plot_path}", file=out)
    return model, history, metrics


def run_cnn(args, out=None, err=None):
    """The cnn command on parsed `args`: (model, history, test metrics). Prints to `out`
    (stdout), notices to `err` (stderr)."""
    return _train_cnn(_prepare_cnn(args, out, err))


def _number(kind, minimum):
    """An argparse type: an int or a finite float, >= minimum; its error is argparse's one line
    ("argument --epochs: expected an integer >= 1, got '-1'")."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") \
                from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'} >= {minimum}, "
                                             f"got {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _data_spec(text):
    if text in DATA_SPECS[:3]:
        return text
    if text.startswith("mnist:"):
        location = text.split(":", 1)[1]
        if not location:
            raise argparse.ArgumentTypeError("mnist: needs a path, as mnist:PATH (a folder of IDX files or an .npz)")
        if not os.path.exists(location):
            raise argparse.ArgumentTypeError(f"mnist:{location}: no such file or folder (nothing is downloaded)")
        return text
    raise argparse.ArgumentTypeError(f"expected one of {', '.join(DATA_SPECS)}, got {text!r}")


class _HelpWithDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: ...)" where there is a default worth showing (not None / False)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def parser():
    root = argparse.ArgumentParser(prog="pyfast-train", description="Train the two starter workloads on pyfast.")
    commands = root.add_subparsers(dest="command", required=True)
    positive, count, rate = _number(int, 1), _number(int, 0), _number(float, 0)
    linreg = commands.add_parser("linreg", help="linear regression: Linear(features, 1), MSE, SGD",
                                 formatter_class=_HelpWithDefaults)
    linreg.add_argument("--samples", type=positive, default=100, help="training samples")
    linreg.add_argument("--features", type=positive, default=2, help="input features")
    linreg.add_argument("--epochs", type=positive, default=1000, help="full-batch SGD steps")
    linreg.add_argument("--lr", type=rate, default=0.01, help="learning rate")
    linreg.add_argument("--seed", type=count, default=0, help="seed of the data and the initial weights")
    linreg.add_argument("--backend", choices=["cuda", "numpy"], help="default: cuda when a GPU is usable")
    linreg.add_argument("--eager", action="store_true",
                        help="on the GPU, one launch per op per step instead of the fused one-launch run")
    cnn = commands.add_parser("cnn", help="the small CNN on handwritten digits, cross-entropy, Adam",
                              formatter_class=_HelpWithDefaults)
    cnn.add_argument("--data", type=_data_spec, default="digits",
                     help="digits (28x28), digits8 (8x8), synthetic, or mnist:PATH: a folder of the four MNIST IDX "
                          "files, or an .npz holding x_train, y_train, x_test, y_test (images (N, H, W), integer "
                          "labels 0-9); nothing is downloaded")
    cnn.add_argument("--epochs", type=positive, default=10, help="train through this epoch (with --resume too)")
    cnn.add_argument("--batch-size", type=positive, default=64, help="images per step")
    cnn.add_argument("--lr", type=rate, default=1e-3, help="Adam's learning rate (the schedule's start)")
    cnn.add_argument("--lr-schedule", choices=["constant", "step", "cosine"], default="constant",
                     help="per epoch: constant; step (times --lr-gamma every --lr-step-size epochs); cosine (to "
                          "--lr-min at --epochs)")
    cnn.add_argument("--lr-step-size", type=positive, default=5, help="epochs per step of the step schedule")
    cnn.add_argument("--lr-gamma", type=rate, default=0.1, help="the step schedule's factor")
    cnn.add_argument("--lr-min", type=rate, default=0.0, help="the cosine schedule's final learning rate")
    cnn.add_argument("--seed", type=count, default=0, help="seed of the split, the weights and the shuffling")
    cnn.add_argument("--augment", type=count, default=0, help="random shifts of up to this many pixels")
    cnn.add_argument("--limit", type=positive, help="use only the first N training images")
    cnn.add_argument("--save", metavar="PATH",
                     help="write a checkpoint (.npz: model, optimizer, epoch) here after every epoch")
    cnn.add_argument("--resume", metavar="PATH",
                     help="continue the run that --save wrote PATH with (same settings; --epochs may grow)")
    cnn.add_argument("--plot", metavar="PATH", help="write the loss / accuracy curves (.png) here")
    cnn.add_argument("--backend", choices=["cuda", "numpy"], help="default: cuda when a GPU is usable")
    cnn.add_argument("--no-progress", action="store_true", help="no progress bar")
    cnn.add_argument("--conv-version", choices=list(_checks.CONV2D_VERSIONS),
                     help="conv kernels on the GPU (default: chosen per pass and shape, see pyfast.ops.conv2d_plan)")
    cnn.add_argument("--no-graph", action="store_true",
                     help="on the GPU, launch every op of every step instead of replaying a CUDA graph")
    root.commands = {"linreg": linreg, "cnn": cnn}
    return root


def main(argv=None):
    """The CLI: 0 when done, 2 for a bad argument or setting (one line on stderr), 1 when the
    training diverged (a loss that is not finite; one line), 130 when interrupted (with how to
    resume)."""
    root = parser()
    args = root.parse_args(argv)
    prepare, run = (_prepare_linreg, _train_linreg) if args.command == "linreg" else (_prepare_cnn, _train_cnn)
    try:
        plan = prepare(args)
    except (ValueError, OSError, RuntimeError) as error:
        # Found before training (a data file, a checkpoint, a folder): one line, exit code 2 as for a
        # bad argument, without the usage block argparse prints for those (it says nothing of files).
        print(f"{root.commands[args.command].prog}: error: {error}", file=sys.stderr)
        return 2
    try:
        run(plan)
    except TrainingDiverged as diverged:
        print(f"pyfast-train {args.command}: the training loss is {diverged.loss} at epoch {diverged.epoch}: training "
              f"diverged; try a smaller --lr (it is {diverged.lr:g})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        message = "pyfast-train: interrupted"
        if getattr(plan, "save_path", None) and plan.finished > plan.start:
            message += (f" after epoch {plan.finished}, which is saved in {plan.save_path}; to continue, run the same "
                        f"command with --resume {plan.save_path}")
        print(message, file=sys.stderr)
        return 130
    return 0
