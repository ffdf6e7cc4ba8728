"""The autograd-free trainer: fit / evaluate / predict, save / load, loss curves, and the CLI.

    python -m pyfast.train linreg [--samples 100 --features 2 --epochs 1000 --lr 0.01 --seed 0]
    python -m pyfast.train cnn [--data digits|synthetic|mnist:PATH] [--epochs 10] [--batch-size 64]
                               [--save model.npz] [--plot curves.png] [--backend cuda|numpy] [--no-graph]

Both backends (``cuda``: pyfast.ops on the GPU, ``numpy``: pyfast.cpu) share all of
this code; without a usable GPU the NumPy backend is used and one line says so.

One concern a module, each importing only modules listed below it:

    cli          pyfast-train: the two commands, their parser, the checks before training
    models       cnn_model
    plots        history_figure, plot_history
    checkpoints  save, load_checkpoint, load
    loop         fit, evaluate, predict, History, epoch_rng; the checks a data set passes
    steps        one training step, eager or replayed as a CUDA graph; the sums on the device
    batches      the batches: from the host through pinned buffers and a copy stream, or
                 gathered on the device

Import the public names from here (``pyfast.train.fit``); the modules' own names may move.
"""

from pyfast.train.batches import DEVICE_DATA_SHARE
from pyfast.train.checkpoints import CHECKPOINT_FORMAT, load, load_checkpoint, save
from pyfast.train.cli import DATA_SPECS, RUN_SETTINGS, load_image_data, main, parser, run_cnn, run_linreg
from pyfast.train.loop import PER_EPOCH, History, epoch_rng, evaluate, fit, predict
from pyfast.train.models import cnn_model
from pyfast.train.plots import history_figure, plot_history

__all__ = ["CHECKPOINT_FORMAT", "DATA_SPECS", "DEVICE_DATA_SHARE", "PER_EPOCH", "RUN_SETTINGS", "History",
           "cnn_model", "epoch_rng", "evaluate", "fit", "history_figure", "load", "load_checkpoint", "load_image_data",
           "main", "parser", "plot_history", "predict", "run_cnn", "run_linreg", "save"]
