"""Every call into pyfast._C from the Python package passes as many arguments as the binding
takes, by name where it names them. The GPU path of an op is the only place such a call runs,
so without this a changed binding would first fail on a GPU machine. Needs the built module
(not a GPU)."""

import ast
import re
from pathlib import Path

import pytest

C = pytest.importorskip("pyfast._C")
PACKAGE = Path(__file__).resolve().parent.parent / "pyfast"
STARRED = {"launch_args": 2}  # helpers splatted into calls, and how many values they give


def binding_parameters(name):
    """Parameter names of a binding, from pybind11's signature line."""
    signature = getattr(C, name).__doc__.splitlines()[0]
    inside = signature[signature.index("(") + 1: signature.rindex(")")]
    depth, current, parts = 0, "", []
    for ch in inside:
        depth += ch in "[("
        depth -= ch in "])"
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    if current.strip():
        parts.append(current)
    return [re.match(r"\s*(\w+)", p).group(1) for p in parts]


def calls_into_c():
    for path in sorted(PACKAGE.rglob("*.py")):  # the subpackages too (pyfast/train)
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "_C"):
                yield pytest.param(node, id=f"{path.relative_to(PACKAGE)}:{node.lineno}:{node.func.attr}")


@pytest.mark.parametrize("call", list(calls_into_c()))
def test_call_matches_the_binding(call):
    name = call.func.attr
    assert hasattr(C, name), f"pyfast._C has no {name}"
    params = binding_parameters(name)
    count = 0
    for arg in call.args:
        if isinstance(arg, ast.Starred):
            helper = arg.value.func.id if isinstance(arg.value, ast.Call) and isinstance(arg.value.func, ast.Name) \
                else None
            # A skip here once hid 16 calls when the helper was renamed: name every helper instead.
            assert helper in STARRED, f"{name}: a starred argument of unknown length; add its helper to STARRED"
            count += STARRED[helper]
        else:
            count += 1
    keywords = [k.arg for k in call.keywords]
    assert count + len(keywords) == len(params), f"{name}: {count} positional + {keywords} for {params}"
    assert set(keywords) <= set(params[count:]), f"{name}: keywords {keywords} not among {params[count:]}"


def test_the_check_sees_the_calls():
    names = {p.values[0].func.attr for p in calls_into_c()}
    assert {"matmul", "adam_step", "adam_schedule", "linear_mse_sgd_fit", "conv2d", "mse_loss"} <= names


def test_matmul_rule_splits_k_only_where_the_tiles_leave_sms_idle():
    from pyfast import ops

    tiled = ops.MATMUL_VERSIONS.index("tiled")
    rule = C.matmul_rule_splits
    assert rule(tiled, 64, 128, 3136, 132) == 12     # fc1 forward, batch 64: 2 tiles of 64x64
    assert rule(tiled, 1024, 128, 3136, 132) == 9    # batch 1024: 32 tiles
    assert rule(tiled, 128, 3136, 1024, 132) == 3    # fc1 weight gradient, batch 1024: 98 tiles
    assert rule(tiled, 128, 3136, 64, 132) == 1      # K too short to split
    assert rule(tiled, 4096, 4096, 4096, 132) == 1   # the grid already fills the card
    assert rule(tiled, 64, 128, 3136, 1) == 1        # one SM: nothing idle
    assert rule(ops.MATMUL_VERSIONS.index("simple"), 64, 128, 3136, 132) == 1
    assert rule(tiled, 1, 1, 1 << 20, 132) == 64     # at most 64 slices
    assert C.matmul_max_splits() == 64


def test_the_numpy_backends_split_limit_is_the_librarys():
    from pyfast import _checks

    assert _checks.MAX_SPLIT_K == C.matmul_max_splits()
