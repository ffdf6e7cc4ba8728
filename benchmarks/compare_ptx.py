"""Whether a change left the kernels' machine code alone: the PTX instruction multiset of every
kernel of kernels/**/*.cu, built from a git revision and from the working tree, compared kernel by
kernel. Needs nvcc, not a GPU.

Both sides are compiled from the same folder: the name nvcc gives a file's anonymous namespace
hashes its path, and cicc's choices (which shared loads it vectorizes) follow that name. nvcc is
not deterministic for some kernels even so, so each side is compiled `--runs` times and a kernel
counts as unchanged when one of its multisets from the working tree is among the revision's.

    python -m benchmarks.compare_ptx HEAD            # the working tree against HEAD
    python -m benchmarks.compare_ptx 1df731c --arch 80 --runs 3
"""

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLAGS = ["-O3", "-std=c++17", "--expt-relaxed-constexpr"]
_ENTRY = re.compile(r"\.entry\s+(\S+)\s*\((.*?)\n\}", re.S)


def instruction_multisets(ptx):
    """{kernel: Counter of opcodes} of one PTX file; the anonymous namespace's hash, which
    depends on the file's path, is dropped from the names."""
    kernels = {}
    for match in _ENTRY.finditer(ptx):
        name = re.sub(r"_GLOBAL__N__[0-9a-f]+_", "_GLOBAL__N_", match.group(1))
        ops = collections.Counter()
        for line in match.group(2).splitlines():
            words = line.strip().rstrip(";").split()
            if not words or words[0].startswith(("//", ".", "{", "}", ")", "$")) or words[0].endswith(":"):
                continue
            ops[words[1] if words[0].startswith("@") and len(words) > 1 else words[0]] += 1
        kernels[name] = ops
    return kernels


def build(kernels, arch, runs, only=None):
    """{file: [multisets of each run]} for every .cu file of the folder `kernels`, compiled from
    one fixed folder (the same path for every tree compared)."""
    tree = Path(tempfile.gettempdir()) / "pyfast-compare-ptx"
    shutil.rmtree(tree, ignore_errors=True)
    shutil.copytree(kernels, tree / "kernels")
    # Files are named by their base names, unique across the family folders (and the same before
    # and after a file moved between folders).
    sources = sorted(s for s in (tree / "kernels").rglob("*.cu") if not only or s.name in only)

    def one(args):
        source, run = args
        ptx = tree / f"{source.stem}.{run}.ptx"
        subprocess.run(["nvcc", "-ptx", f"-arch=sm_{arch}", *FLAGS, "-I", str(tree / "kernels"), str(source),
                        "-o", str(ptx)], check=True, capture_output=True)
        return source.name, instruction_multisets(ptx.read_text())

    results = collections.defaultdict(list)
    with ThreadPoolExecutor() as pool:
        for name, kernels_of_file in pool.map(one, [(s, r) for s in sources for r in range(runs)]):
            results[name].append(kernels_of_file)
    shutil.rmtree(tree, ignore_errors=True)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("revision", help="git revision to compare the working tree with")
    parser.add_argument("--arch", default="90")
    parser.add_argument("--runs", type=int, default=2, help="compilations of each file on each side")
    parser.add_argument("--file", action="append", help="only this kernels/ file (repeatable)")
    args = parser.parse_args(argv)
    if shutil.which("nvcc") is None:
        sys.exit("compare_ptx: nvcc is not on PATH")
    with tempfile.TemporaryDirectory() as old:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.revision, "kernels"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", old], input=archive, check=True)
        before = build(Path(old) / "kernels", args.arch, args.runs, args.file)
    after = build(ROOT / "kernels", args.arch, args.runs, args.file)
    same = total = 0
    for name in sorted(after):
        if name not in before:
            print(f"{name}: new file ({len(after[name][0])} kernels)")
            continue
        seen, now = collections.defaultdict(list), collections.defaultdict(list)
        for runs, into in ((before[name], seen), (after[name], now)):
            for run in runs:
                for kernel, ops in run.items():
                    into[kernel].append(ops)
        for kernel, variants in now.items():
            total += 1
            if kernel not in seen:
                print(f"{name}: {kernel}: new kernel")
            elif any(ops == other for ops in variants for other in seen[kernel]):
                same += 1
            else:
                ops, other = variants[0], seen[kernel][0]
                print(f"{name}: {kernel}: added {dict(ops - other)}, removed {dict(other - ops)}")
        for kernel in seen.keys() - now.keys():
            print(f"{name}: {kernel}: gone")
    print(f"{same} of {total} kernels: instruction multisets unchanged against {args.revision} (sm_{args.arch})")
    return 0 if same == total else 1


if __name__ == "__main__":
    sys.exit(main())
