"""Measured kernel plans per shape class and card: for matmul, which tile configuration and how
many K splits (pyfast/matmul_tuning.json); for conv2d, which version and configuration per
pass (pyfast/conv_tuning.json).

The table is written on a GPU by ``python -m benchmarks.tune_matmul`` (it times every plan
of every configuration on representative shapes and keeps the fastest); a card or a shape
class the table does not know gets the launcher's built-in choice (no split).

Shape classes round log2 of M, N and K to the nearest integer, so 1000 and 1024 share a
class while 64 and 4096 do not; a class is separate per version, precision and transposes.
A conv2d class is exact in the filter, stride and dilation and rounds log2 of N, C, K and
H*W the same way. Both tables are written by tuners on a GPU
(``python -m benchmarks.tune_matmul``, ``python -m benchmarks.tune_conv``).
"""

import functools
import json
import math
from pathlib import Path

TABLE_PATH = Path(__file__).with_name("matmul_tuning.json")
CONV_TABLE_PATH = Path(__file__).with_name("conv_tuning.json")
FORMAT = 1


def shape_class(m, n, k):
    return tuple(round(math.log2(d)) if d > 0 else -1 for d in (m, n, k))


def class_key(version_code, precision_code, trans_a, trans_b, m, n, k):
    cm, cn, ck = shape_class(m, n, k)
    return f"v{version_code}-p{precision_code}-t{int(bool(trans_a))}{int(bool(trans_b))}-m{cm}-n{cn}-k{ck}"


def load_table(path=None):
    """{card name: {class key: (config, splits)}} from `path` (default TABLE_PATH); an absent
    or foreign file is an empty table."""
    return _load(str(path if path is not None else TABLE_PATH))


@functools.cache
def _load(path):
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return {}
    cards = data.get("cards", {})
    return {card: {key: tuple(entry["plan"]) for key, entry in classes.items()} for card, classes in cards.items()}


def clear_cache():
    """Forget the loaded tables and past lookups (after rewriting a file or a *_PATH)."""
    _load.cache_clear()
    lookup.cache_clear()


@functools.lru_cache(maxsize=4096)
def lookup(card, version_code, precision_code, trans_a, trans_b, m, n, k):
    """(config, splits) measured best for this card and shape class, or None."""
    plans = load_table().get(card)
    if not plans:
        return None
    return plans.get(class_key(version_code, precision_code, trans_a, trans_b, m, n, k))


def _log2_class(d):
    return round(math.log2(d)) if d > 0 else -1


def conv_class_key(pass_code, g):
    """The class of one conv2d pass on geometry `g` (pyfast._checks.conv2d_dims)."""
    n, c, k, hw = (_log2_class(d) for d in (g["n"], g["c"], g["k"], g["h"] * g["w"]))
    (sh, sw), (dh, dw) = g["stride"], g["dilation"]
    return f"p{pass_code}-r{g['r']}x{g['s']}-st{sh}x{sw}-d{dh}x{dw}-n{n}-c{c}-k{k}-hw{hw}"


def load_conv_table(path=None):
    """{card name: {class key: (version code, config)}} from `path` (default CONV_TABLE_PATH)."""
    return _load(str(path if path is not None else CONV_TABLE_PATH))


def conv_lookup(card, pass_code, g):
    """(version code, config) measured best for this card and pass's class, or None."""
    plans = load_conv_table().get(card)
    if not plans:
        return None
    return plans.get(conv_class_key(pass_code, g))
