"""What a fresh install needs: the wheel carries every data file of the package, and the
default training data loads with the core dependencies alone."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _setup_constant(name):
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"setup.py defines no {name}")


def test_every_data_file_of_the_package_is_in_package_data():
    data_files = {p.name for p in (ROOT / "pyfast").iterdir()
                  if p.is_file() and p.suffix not in (".py", ".pyc", ".so", ".pyd")}
    assert set(_setup_constant("PACKAGE_DATA")) == data_files


def test_the_profile_data_files_are_in_package_data():
    data_files = {p.name for p in (ROOT / "pyfast" / "profile").iterdir() if p.suffix == ".json"}
    assert set(_setup_constant("PROFILE_DATA")) == data_files


def test_every_package_is_in_packages():
    packages = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "pyfast").rglob("__init__.py")}
    assert set(_setup_constant("PACKAGES")) == packages


def test_the_digits_load_without_scikit_learn():
    # A fresh process in which importing scikit-learn fails, as after `pip install .` alone.
    code = ("import sys; sys.modules['sklearn'] = None\n"
            "from pyfast import data\n"
            "x, y = data.load_digits()\n"
            "print(x.shape, y.shape, x.dtype, y.dtype)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(1797, 1, 28, 28) (1797,) float32 int64"
