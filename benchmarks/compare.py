"""What got faster or slower between two benchmark runs on the same card.

    python -m benchmarks.compare OLD.json NEW.json [--threshold 0.03]

Each argument: a merged results.json (python -m benchmarks.run) or one family's JSON. Rows
are matched by family, case and op; the speed-up is old time / new time of pyfast's median.
Changes within the threshold (default 3%) are listed as unchanged: smaller differences are
run-to-run noise on these cards.
"""

import argparse
import sys

from benchmarks.report import FAMILIES, load_results, unified_rows


def keyed(results):
    return {(family, r["case"], r["op"]): r for family in FAMILIES
            for r in unified_rows(family, results["families"].get(family, [])) if r.get("ms")}


def compare(old, new, threshold=0.03):
    """Rows (family, case, op, old ms, new ms, speed-up, verdict), slowest change first."""
    if old["info"].get("device") != new["info"].get("device"):
        raise ValueError(f"the runs are on different cards: {old['info'].get('device')} and "
                         f"{new['info'].get('device')}; compare runs of the same card")
    before, after = keyed(old), keyed(new)
    rows = []
    for key in sorted(before.keys() & after.keys()):
        speedup = before[key]["ms"] / after[key]["ms"]
        verdict = "faster" if speedup > 1 + threshold else "slower" if speedup < 1 - threshold else "unchanged"
        rows.append((*key, before[key]["ms"], after[key]["ms"], speedup, verdict))
    rows.sort(key=lambda row: row[5])
    return rows, sorted(before.keys() - after.keys()), sorted(after.keys() - before.keys())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--threshold", type=float, default=0.03)
    args = parser.parse_args(argv)
    rows, only_old, only_new = compare(load_results([args.old]), load_results([args.new]), args.threshold)
    print("| family | case | op | old ms | new ms | speed-up | |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for family, case, op, old_ms, new_ms, speedup, verdict in rows:
        print(f"| {family} | {case} | {op} | {old_ms:.4f} | {new_ms:.4f} | {speedup:.2f}x | {verdict} |")
    counts = {v: sum(1 for r in rows if r[-1] == v) for v in ("faster", "slower", "unchanged")}
    print(f"\n{counts['faster']} faster, {counts['slower']} slower, {counts['unchanged']} unchanged"
          + (f"; {len(only_old)} only in the old run" if only_old else "")
          + (f"; {len(only_new)} only in the new run" if only_new else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
