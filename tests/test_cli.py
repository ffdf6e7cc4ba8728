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

    monkeypatch.setattr(train.loop, "epoch_rng", interrupt_in_epoch_3)  # where fit reads it
    code, out, err = run(capsys, [*settings, "--save", str(tmp_path / "part.npz")])
    assert code == 130 and "epoch 2/3" in out and "epoch 3/3" not in out
    assert f"after epoch 2, which is saved in {tmp_path / 'part.npz'}" in err
    assert f"--resume {tmp_path / 'part.npz'}" in err
    monkeypatch.setattr(train.loop, "epoch_rng", real_epoch_rng)

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


# --------------------------------------------------------------- in a process of its own
def process(argv, cwd, python_options=(), **env):
    """(exit code, stdout, stderr) of `python -m pyfast.train argv` run as a user runs it."""
    import os
    import subprocess
    import sys

    result = subprocess.run([sys.executable, *python_options, "-m", "pyfast.train", *argv], cwd=cwd,
                            capture_output=True, text=True, timeout=300, env={**os.environ, **env})
    return result.returncode, result.stdout, result.stderr


def refused_by_process(argv, cwd, message, code=2):
    got, out, err = process(argv, cwd)
    assert got == code, (out, err)
    lines = err.strip().splitlines()
    assert "Traceback" not in err and "Warning" not in err and "usage:" not in err, err  # the one line alone
    assert lines[-1].startswith(f"pyfast-train {argv[0]}: ") and message in lines[-1], lines[-1]
    assert "epoch 1/" not in out
    return lines[-1]


def _mnist_npz(path, **override):
    rng = np.random.default_rng(0)
    arrays = dict(x_train=rng.integers(0, 256, (40, 12, 12), dtype=np.uint8), y_train=rng.integers(0, 10, 40),
                  x_test=rng.integers(0, 256, (10, 12, 12), dtype=np.uint8), y_test=rng.integers(0, 10, 10))
    arrays.update(override)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return f"mnist:{path}"


MNIST_PROBLEMS = [
    (dict(x_train=None, images=np.zeros((40, 12, 12), np.uint8)),
     "an .npz for mnist:PATH needs the arrays x_train, y_train, x_test, y_test; it lacks x_train"),
    (dict(y_train=np.zeros(39, np.int64)), "x_train has 40 images but y_train has 39 labels"),
    (dict(y_test=np.full(10, 12)), "y_test must lie in [0, 10) (the CNN's 10 classes); got values from 12 to 12"),
    (dict(y_train=np.full(40, 3.7)), "y_train must be integer class indices, got dtype float64"),
    (dict(x_train=np.zeros((40, 3, 12, 12), np.uint8)), "x_train must hold grey images"),
    (dict(x_train=np.zeros((40, 12, 16), np.uint8), x_test=np.zeros((10, 12, 16), np.uint8)),
     "the CNN takes square images of at least 4x4 pixels"),
]


@pytest.mark.parametrize("override, message", MNIST_PROBLEMS, ids=["keys", "lengths", "range", "float", "rgb",
                                                                   "square"])
def test_every_problem_of_a_data_file_is_one_line_and_exit_2(tmp_path, override, message):
    spec = _mnist_npz(tmp_path / "data.npz", **override)
    refused_by_process(["cnn", "--data", spec, "--backend", "numpy", "--epochs", "1"], tmp_path, message)


def test_a_damaged_data_file_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "data.npz").write_bytes(b"PK\x03\x04 not really a zip")
    refused_by_process(["cnn", "--data", f"mnist:{tmp_path / 'data.npz'}", "--backend", "numpy"], tmp_path,
                       "not a readable NumPy .npz archive")


@pytest.mark.parametrize("content, message", [
    (b"<!DOCTYPE html><html><body>Not Found</body></html>", "not an .npz archive (np.savez writes a zip file; "
                                                            "this one starts with b'<!DOCTYPE html><')"),
    (None, "x_train holds Python objects (an object array, pickled), which pyfast does not load"),
], ids=["html page", "pickled objects"])
def test_a_data_file_is_never_met_with_pickle_advice(tmp_path, content, message):
    """An HTML page saved as x.npz, or an archive of object arrays: said plainly, without numpy's
    advice to load it with allow_pickle=True (never safe for a file one did not make)."""
    path = tmp_path / "x.npz"
    if content is None:
        _mnist_npz(path, x_train=np.array([np.zeros((12, 12)), "label"], dtype=object))
    else:
        path.write_bytes(content)
    line = refused_by_process(["cnn", "--data", f"mnist:{path}", "--backend", "numpy"], tmp_path, message)
    assert "pickle=" not in line


def test_help_names_the_arrays_an_npz_needs(capsys):
    code, out, _ = run(capsys, ["cnn", "--help"])
    assert code == 0 and "x_train, y_train, x_test, y_test" in " ".join(out.split())


def test_a_diverging_run_stops_with_one_line_and_a_nonzero_exit(tmp_path):
    line = refused_by_process(["linreg", "--lr", "1e10", "--backend", "numpy"], tmp_path,
                              "training diverged; try a smaller --lr (it is 1e+10)", code=1)
    assert "the training loss is inf at epoch 3" in line


@pytest.mark.parametrize("option, name, message", [
    ("--plot", "curves.txt", "--plot: cannot write a .txt file; give a name ending in .png"),
    ("--save", "model.txt", "--save: cannot write a .txt file; give a name ending in .npz"),
])
def test_an_output_suffix_the_writer_cannot_write_is_refused(tmp_path, option, name, message):
    refused_by_process([*SMALL, option, str(tmp_path / name)], tmp_path, message)


def test_a_given_suffix_is_honoured(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    code, out, err = run(capsys, [*SMALL, "--epochs", "1", "--plot", str(tmp_path / "curves.jpg"),
                                  "--save", str(tmp_path / "model.npz")])
    assert code == 0, err
    assert (tmp_path / "curves.jpg").read_bytes()[:2] == b"\xff\xd8"  # a JPEG, under the name given
    assert not list(tmp_path.glob("curves.jpg.*")) and (tmp_path / "model.npz").exists()


def test_an_output_folder_that_refuses_files_is_found_before_training(tmp_path):
    import os

    if os.geteuid() == 0 and os.path.isdir("/sys") and os.access("/sys", os.W_OK):
        folder = "/sys"  # root passes access(), yet no file can be made there
    else:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
    refused_by_process([*SMALL, "--save", f"{folder}/model.npz"], tmp_path, f"--save: cannot write in the folder")


def test_a_source_checkout_without_the_extension_says_so(tmp_path):
    """`python -m pyfast.train` in a checkout whose pyfast has no compiled module, while an
    installed pyfast has one: the notice names the checkout and how to fix it."""
    import shutil
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    checkout = tmp_path / "checkout"
    shutil.copytree(root / "pyfast", checkout / "pyfast", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    (checkout / "kernels").mkdir()
    (checkout / "setup.py").write_text("")
    installed = tmp_path / "site" / "pyfast"
    installed.mkdir(parents=True)
    (installed / "_C.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")  # what an install leaves there
    # Without site's .pth files (-S) no editable install intervenes: only the paths, as after `pip install .`.
    site_packages = Path(np.__file__).resolve().parent.parent
    code, out, err = process(["linreg", "--epochs", "100"], checkout, python_options=("-S",),
                             PYTHONPATH=f"{tmp_path / 'site'}:{site_packages}", PYFAST_EMULATE="")
    assert code == 0, err
    notice = err.strip().splitlines()[0]
    assert f"pyfast was imported from the source checkout {checkout}" in notice
    assert "run from another folder, or install with `pip install -e .`" in notice and "NumPy backend" in notice


@pytest.mark.parametrize("terminal", [False, True], ids=["pipe", "terminal"])
def test_progress_is_a_bar_on_a_terminal_and_one_line_per_epoch_elsewhere(tmp_path, terminal):
    """tqdm (a dependency) draws the bar within an epoch where stderr is a terminal; into a file or
    a pipe its frames would pile up, so there each epoch is its one line on stdout."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios

    argv = [sys.executable, "-m", "pyfast.train", "cnn", "--data", "digits8", "--backend", "numpy", "--epochs", "2",
            "--limit", "128", "--batch-size", "16"]
    if terminal:
        leader, follower = pty.openpty()
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal 100 wide
        with subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=follower) as child:
            os.close(follower)  # the child's copy is the last: reading ends when the child does
            chunks = []
            while True:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # EIO: no process holds the terminal any more
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            out, code = child.stdout.read().decode(), child.wait(timeout=300)
        os.close(leader)
        err = b"".join(chunks).decode(errors="replace")
    else:
        result = subprocess.run(argv, cwd=tmp_path, capture_output=True, timeout=300)
        out, err, code = result.stdout.decode(), result.stderr.decode(), result.returncode
    assert code == 0, err
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("epoch")] == ["epoch 1/2", "epoch 2/2"]
    if terminal:
        assert "epoch 1/2" in err and "it/s" in err, err  # tqdm's bar, described by the epoch
    else:
        assert "\r" not in err and "it/s" not in err, err
