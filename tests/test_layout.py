"""The layout keeps its layers: every import inside pyfast points down docs/ARCHITECTURE.md's
layers (never up), no module imports itself back through others, and the paths that page names
exist. Read from the source (ast), so it needs nothing built."""

import ast
import glob
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "pyfast"

# Low to high, as docs/ARCHITECTURE.md draws them (a module may import its own layer or lower).
LAYERS = [
    ["pyfast._C", "pyfast._C_emu", "pyfast.errors", "pyfast.testing", "pyfast.emulator.cupy", "pyfast.emulator.cupyx"],
    ["pyfast.emulator.loader"],
    ["pyfast._device", "pyfast._checks", "pyfast._tuning"],
    ["pyfast._arrays", "pyfast._numpy_operands", "pyfast._groups"],
    ["pyfast.ops", "pyfast.reference", "pyfast.cpu", "pyfast.emulator"],
    ["pyfast.nn", "pyfast.graph", "pyfast.data", "pyfast.profile*", "pyfast.torch*"],
    ["pyfast.optim"],
    ["pyfast.train*"],
    ["pyfast", "pyfast.profile.__main__", "pyfast.train.__main__"],
]


def modules():
    """{module name: path} of every module of the package."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(name, path, known):
    """The pyfast modules `name` imports (at the top or inside a function)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                full = f"{module}.{alias.name}"
                found.add(full if full in known or full in ("pyfast._C", "pyfast._C_emu") else module)
    return {m for m in found if m == "pyfast" or m.startswith("pyfast.")} - {name}


def layer(name):
    """The index in LAYERS of `name`: its own entry, else the first "package*" holding it."""
    for index, members in enumerate(LAYERS):
        if name in members:
            return index
    for index, members in enumerate(LAYERS):
        for member in members:
            if member.endswith("*") and (name == member[:-1] or name.startswith(member[:-1] + ".")):
                return index
    return None


def graph():
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def test_every_module_has_a_layer():
    assert [name for name in graph() if layer(name) is None] == []


def test_imports_point_down_the_layers():
    upward = [f"{name} (layer {layer(name)}) imports {target} (layer {layer(target)})"
              for name, targets in graph().items() for target in sorted(targets)
              if layer(target) is not None and layer(target) > layer(name)]
    assert upward == []


def test_no_module_imports_itself_back():
    edges = graph()
    cycles = []

    def visit(node, path):
        for target in sorted(edges.get(node, ())):
            if target == path[0]:
                cycles.append(" -> ".join(path + [target]))
            elif target not in path and len(path) < 8:
                visit(target, path + [target])

    for start in sorted(edges):
        visit(start, [start])
    assert cycles == []


def test_the_checks_see_an_upward_import(tmp_path, monkeypatch):
    """The layer test is not vacuous: an import of ops from _checks is found."""
    known = modules()
    fake = tmp_path / "_checks.py"
    fake.write_text("from pyfast import ops\n")
    assert "pyfast.ops" in imports("pyfast._checks", fake, known)
    assert layer("pyfast.ops") > layer("pyfast._checks")


def test_the_architecture_page_names_only_what_exists():
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    paths = {p for p in re.findall(r"`([^`\s]+)`", text)
             if "/" in p and "<" not in p and not p.startswith(("#", '"'))}
    assert paths, "the page names no paths"
    missing = [p for p in sorted(paths) if not glob.glob(str(ROOT / p))]
    assert missing == []


@pytest.mark.parametrize("family", ["matmul", "conv2d", "pool", "loss", "optim", "elementwise", "data", "fused"])
def test_each_family_has_its_kernel_folder(family):
    folder = ROOT / "kernels" / family
    assert folder.is_dir() and list(folder.glob("*.cu")) and list(folder.glob("*.cuh"))
    assert not list((ROOT / "kernels").glob("*.cu")), "kernel sources belong in a family's folder"
