"""The CLI as a new user meets it, through main(argv) (NumPy backend, CPU): every bad value is
refused before training with argparse's one-line error and exit code 2, output goes where it
belongs (results on stdout, notices on stderr), checkpoints are written every epoch, and a run
interrupted and resumed ends with the weights of the uninterrupted run."""

import importlib.util

import numpy as np
import pytest

import pyfast
from pyfast import train

# A small, quick run of the CNN on the 8x8 digits.
SMALL = ["cnn", "--data", "digits8", "--limit", "160", "--batch-size", "32", "--backend", "numpy", "--no-progress"]


def run(capsys, argv):
    """(exit code, stdout, stderr) of pyfast-train with `argv`."""
    try:
        code = train.main(argv)
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def refused(capsys, argv, message):
    """The command stops before training with exit code 2 and `message` in one error line."""
    code, out, err = run(capsys, argv)
    assert code == 2, (out, err)
    assert "Traceback" not in err and "epoch" not in out
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"pyfast-train {argv[0]}: error: "), err
    assert message in last, last
    return last


@pytest.mark.parametrize("argv, message", [
    (["cnn", "--batch-size", "0"], "argument --batch-size: expected an integer >= 1, got '0'"),
    (["cnn", "--epochs", "-1"], "argument --epochs: expected an integer >= 1, got '-1'"),
    (["cnn", "--epochs", "2.5"], "argument --epochs: expected an integer, got '2.5'"),
    (["linreg", "--samples", "0"], "argument --samples: expected an integer >= 1, got '0'"),
    (["linreg", "--features", "0"], "argument --features: expected an integer >= 1"),
    (["linreg", "--epochs", "0"], "argument --epochs: expected an integer >= 1"),
    (["cnn", "--limit", "-5"], "argument --limit: expected an integer >= 1, got '-5'"),
    (["cnn", "--seed", "-1"], "argument --seed: expected an integer >= 0, got '-1'"),
    (["linreg", "--seed", "-1"], "argument --seed: expected an integer >= 0"),
    (["cnn", "--augment", "-1"], "argument --augment: expected an integer >= 0"),
    (["cnn", "--lr", "inf"], "argument --lr: expected a finite number, got 'inf'"),
    (["cnn", "--lr", "nan"], "argument --lr: expected a finite number, got 'nan'"),
    (["cnn", "--lr", "-0.1"], "argument --lr: expected a number >= 0, got '-0.1'"),
    (["cnn", "--lr", "fast"], "argument --lr: expected a number, got 'fast'"),
    (["linreg", "--lr", "inf"], "argument --lr: expected a finite number, got 'inf'"),
    (["cnn", "--lr-schedule", "linear"], "argument --lr-schedule: invalid choice: 'linear'"),
    (["cnn", "--lr-step-size", "0"], "argument --lr-step-size: expected an integer >= 1"),
    (["cnn", "--lr-gamma", "-1"], "argument --lr-gamma: expected a number >= 0"),
    (["cnn", "--data", "imagenet"], "argument --data: expected one of digits, digits8, synthetic, mnist:PATH"),
    (["cnn", "--data", "mnist:"], "argument --data: mnist: needs a path"),
    (["cnn", "--data", "mnist:/no/such/folder"], "argument --data: mnist:/no/such/folder: no such file or folder"),
    (["cnn", "--backend", "tpu"], "argument --backend: invalid choice: 'tpu'"),
    (["cnn", "--conv-version", "fft"], "argument --conv-version: invalid choice: 'fft'"),
])
def test_bad_values_are_one_line_errors(capsys, argv, message):
    refused(capsys, argv, message)


def test_problems_found_in_files_and_data_stop_the_run_before_training(capsys, tmp_path, monkeypatch):
    refused(capsys, [*SMALL, "--augment", "100"], "--augment: shifts of 100 pixels would move a 8x8 image out of "
                                                  "its frame; expected less than 8")
    refused(capsys, [*SMALL, "--save", str(tmp_path / "missing" / "m.npz")],
            f"--save: the folder {tmp_path / 'missing'} does not exist")
    refused(capsys, [*SMALL, "--save", str(tmp_path)], f"--save: {tmp_path} is a folder; give a file name")
    refused(capsys, [*SMALL, "--plot", str(tmp_path / "missing" / "c.png")], "--plot: the folder")
    refused(capsys, [*SMALL, "--data", f"mnist:{tmp_path}"], "no train-images-idx3-ubyte[.gz]")
    refused(capsys, [*SMALL, "--resume", str(tmp_path / "nothing.npz")],
            f"--resume: cannot read {tmp_path / 'nothing.npz'}: No such file or directory")
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    refused(capsys, [*SMALL, "--resume", str(tmp_path / "notes.txt")], "notes.txt: not a pyfast checkpoint")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real_find_spec(name, *a))
    refused(capsys, [*SMALL, "--plot", str(tmp_path / "c.png")], "--plot: needs matplotlib")


@pytest.mark.skipif(pyfast.is_available(), reason="checks the no-GPU path")
def test_without_a_gpu_cuda_is_refused_and_the_fallback_notice_goes_to_stderr(capsys):
    refused(capsys, ["cnn", "--backend", "cuda"], "backend 'cuda' needs a usable GPU")
    code, out, err = run(capsys, ["linreg", "--epochs", "100"])
    assert code == 0
    assert out.splitlines()[0].startswith("Epoch 100, loss=")  # stdout holds the results only
    assert "using the NumPy backend" in err and "using the NumPy backend" not in out


def test_help_shows_the_defaults(capsys):
    for command, defaults in (("cnn", ["(default: 10)", "(default: 64)", "(default: 0.001)", "(default: digits)",
                                       "(default: constant)"]),
                              ("linreg", ["(default: 100)", "(default: 1000)", "(default: 0.01)"])):
        code, out, _ = run(capsys, [command, "--help"])
        assert code == 0
        help_text = " ".join(out.split())
        for default in defaults:
            assert default in help_text, (command, default)


def test_save_names_the_file_it_wrote_and_checkpoints_every_epoch(capsys, tmp_path):
    code, out, _ = run(capsys, [*SMALL, "--epochs", "2", "--save", str(tmp_path / "model")])
    assert code == 0
    assert out.strip().splitlines()[-1] == f"saved {tmp_path / 'model.npz'}"
    checkpoint = train.load_checkpoint(tmp_path / "model.npz")
    assert checkpoint["epoch"] == 2 and checkpoint["history"]["epoch"] == [1, 2]
    assert {"mean", "std"} <= set(checkpoint["metadata"])
    model, metadata = train.load(tmp_path / "model.npz", backend="numpy")  # usable for inference alone
    assert metadata["std"] > 0 and train.predict(model, np.zeros((2, 1, 8, 8), np.float32)).shape == (2, 10)


def test_an_interrupted_run_resumes_to_the_uninterrupted_weights(capsys, tmp_path, monkeypatch):
    settings = [*SMALL, "--epochs", "3", "--lr-schedule", "cosine", "--lr", "0.003", "--augment", "1", "--seed", "2"]
    assert run(capsys, [*settings, "--save", str(tmp_path / "whole.npz")])[0] == 0

    real_epoch_rng = train.epoch_rng

    def interrupt_in_epoch_3(seed, epoch):  # Ctrl-C as epoch 3 starts
        if epoch == 3:
            raise KeyboardInterrupt
        return real_epoch_rng(seed, epoch)

    monkeypatch.setattr(train, "epoch_rng", interrupt_in_epoch_3)
    code, out, err = run(capsys, [*settings, "--save", str(tmp_path / "part.npz")])
    assert code == 130 and "epoch 2/3" in out and "epoch 3/3" not in out
    assert f"after epoch 2, which is saved in {tmp_path / 'part.npz'}" in err
    assert f"--resume {tmp_path / 'part.npz'}" in err
    monkeypatch.setattr(train, "epoch_rng", real_epoch_rng)

    code, out, _ = run(capsys, [*settings, "--resume", str(tmp_path / "part.npz"), "--save",
                                str(tmp_path / "resumed.npz")])
    assert code == 0 and f"resuming {tmp_path / 'part.npz'} after epoch 2" in out
    assert "epoch 3/3" in out and "epoch 2/3" not in out
    whole, resumed = (train.load_checkpoint(tmp_path / f"{name}.npz") for name in ("whole", "resumed"))
    for name, value in whole["model"].items():
        np.testing.assert_array_equal(value, resumed["model"][name], err_msg=name)
    for name, values in whole["optimizer"]["state"].items():
        for a, b in zip(values, resumed["optimizer"]["state"][name]):
            np.testing.assert_array_equal(a, b)
    for key in ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr"):
        assert whole["history"][key] == resumed["history"][key], key


def test_resume_refuses_a_different_run(capsys, tmp_path):
    settings = [*SMALL, "--epochs", "2"]
    assert run(capsys, [*settings, "--save", str(tmp_path / "run.npz")])[0] == 0
    checkpoint = str(tmp_path / "run.npz")
    refused(capsys, [*settings, "--resume", checkpoint], "--epochs: " + checkpoint + " has already trained 2 epochs")
    refused(capsys, [*SMALL, "--epochs", "4", "--batch-size", "16", "--resume", checkpoint],
            "--batch-size 32 there, 16 here")
    refused(capsys, [*SMALL, "--epochs", "4", "--lr-schedule", "cosine", "--resume", checkpoint],
            "--lr-schedule 'constant' there, 'cosine' here")
    code, out, _ = run(capsys, [*SMALL, "--epochs", "3", "--resume", checkpoint])  # more epochs: fine
    assert code == 0 and "epoch 3/3" in out
    model_only = tmp_path / "model_only.npz"
    train.save(train.cnn_model("numpy", image_size=8), model_only)
    refused(capsys, [*SMALL, "--epochs", "4", "--resume", str(model_only)], "holds a model but not the state of a pyfast-train run")


def test_cosine_resume_needs_the_same_horizon(capsys, tmp_path):
    settings = [*SMALL, "--lr-schedule", "cosine"]
    assert run(capsys, [*settings, "--epochs", "1", "--save", str(tmp_path / "c.npz")])[0] == 0
    refused(capsys, [*settings, "--epochs", "3", "--resume", str(tmp_path / "c.npz")],
            "under --lr-schedule cosine, --epochs is where the schedule ends")
