"""The README's Python snippets run as written (on the NumPy backend: the Use snippet through
the substitution the README itself gives for machines without a GPU)."""

import re
from pathlib import Path

import pytest

import pyfast

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _snippet(after):
    """The first ```python block after the text `after`."""
    return re.search(r"```python\n(.*?)```", README[README.index(after):], re.S).group(1)


def test_use_snippet_runs_on_the_numpy_twins():
    code = _snippet("## Use")
    if not pyfast.is_available():
        substituted = code.replace("import cupy, pyfast\nfrom pyfast import ops",
                                   "import numpy as cupy, pyfast\nfrom pyfast import reference as ops")
        assert substituted != code, "the README's substitution no longer applies to its snippet"
        code = substituted
    scope = {}
    exec(compile(code, "README.md (Use)", "exec"), scope)
    assert scope["dx"].shape == (64, 3136) and scope["dw"].shape == (3136, 128) and scope["loss"].shape == ()
    assert scope["pooled"].shape == (64, 32, 14, 14) and scope["dconv"].shape == (64, 32, 28, 28)
    assert scope["dkernel"].shape == (32, 1, 3, 3) and scope["dbias"].shape == (32,)


def test_train_snippet_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # it saves m.npz
    code = _snippet("In Python (")
    short = code.replace("epochs=10", "epochs=1").replace("T_max=10", "T_max=1")  # one epoch is enough here
    assert short.count("=1,") == 1 and "T_max=1)" in short
    scope = {}
    exec(compile(short, "README.md (Train)", "exec"), scope)
    assert scope["history"]["epoch"] == [1] and set(scope["stats"]) == {"mean", "std"}
    assert (tmp_path / "m.npz").exists()


def test_the_gpu_status_section_is_what_the_recorded_runs_and_git_say():
    import subprocess

    from benchmarks import status

    runs = status.load_runs()
    known = subprocess.run(["git", "cat-file", "-e", f"{runs[-1]['commit']}^{{commit}}"], capture_output=True,
                           cwd=Path(__file__).resolve().parents[1])
    if known.returncode != 0:
        pytest.skip(f"no git history holding {runs[-1]['commit']} here")
    block = README.split(status.README_START, 1)[1].split(status.README_END, 1)[0]
    assert block.strip() == status.section(runs).strip(), "regenerate it: python -m benchmarks.status --readme README.md"


def test_a_run_is_recorded_from_its_pytest_log(tmp_path):
    from benchmarks import status

    log = ("...\nFAILED tests/test_loss.py::test_x - AssertionError\n"
           "==== 1 failed, 1022 passed, 11 skipped in 30.1s ====\n")
    entry = status.record(log, "NVIDIA H200", "pytest -m gpu")
    assert (entry["passed"], entry["failed"], entry["skipped"]) == (1022, 1, 11)
    assert entry["failures"] == ["tests/test_loss.py::test_x"] and entry["card"] == "NVIDIA H200"
    assert "commit" in entry and "dirty" in entry
