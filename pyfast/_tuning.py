"""Measured matmul plans: which tile configuration and how many K splits to use per shape
class and card, read from pyfast/matmul_tuning.json.

The table is written on a GPU by ``python -m benchmarks.tune_matmul`` (it times every plan
of every configuration on representative shapes and keeps the fastest); a card or a shape
class the table does not know gets the launcher's built-in choice (no split).

Shape classes round log2 of M, N and K to the nearest integer, so 1000 and 1024 share a
class while 64 and 4096 do not; a class is separate per version, precision and transposes.
"""

import functools
import json
import math
from pathlib import Path

TABLE_PATH = Path(__file__).with_name("matmul_tuning.json")
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
    """Forget the loaded table and past lookups (after rewriting the file or TABLE_PATH)."""
    _load.cache_clear()
    lookup.cache_clear()


@functools.lru_cache(maxsize=4096)
def lookup(card, version_code, precision_code, trans_a, trans_b, m, n, k):
    """(config, splits) measured best for this card and shape class, or None."""
    plans = load_table().get(card)
    if not plans:
        return None
    return plans.get(class_key(version_code, precision_code, trans_a, trans_b, m, n, k))
