"""Which source a run measured: the git commit, and whether the files differed from it.

In a git checkout git says. A lent GPU machine gets a copy of the working tree without its .git,
so before sending it stamp the tree here and carry the stamp along:

    python -m benchmarks.source stamp      # writes benchmarks/SOURCE.json (ignored by git;
                                           # the device tool's carry=["benchmarks/SOURCE.json"])
    python -m benchmarks.source            # prints what a run here would record

The stamp holds the commit, whether the tree differed from it (dirty) and a digest of every
tracked file as it was; where git is missing, the files are digested again and compared, so a
result never claims a commit its files do not match.
"""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAMP = ROOT / "benchmarks" / "SOURCE.json"


def _git(*args):
    result = subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT, timeout=30)
    if result.returncode != 0:
        raise OSError(result.stderr.strip() or f"git {args[0]} failed")
    return result.stdout


def _digest(files):
    """sha256 over the paths and contents of `files` (relative to ROOT); missing files count as such."""
    total = hashlib.sha256()
    for name in sorted(files):
        total.update(name.encode() + b"\0")
        path = ROOT / name
        total.update(hashlib.sha256(path.read_bytes()).digest() if path.is_file() else b"missing")
    return total.hexdigest()


def _git_state():
    """{"commit", "dirty"} of the checkout (OSError without one)."""
    commit = _git("rev-parse", "--short", "HEAD").strip()
    return {"commit": commit, "dirty": bool(_git("status", "--porcelain", "--untracked-files=no").strip())}


def from_git():
    """{"commit", "dirty", "files", "digest"} of the checkout (OSError without one)."""
    files = [name for name in _git("ls-files").splitlines() if name]
    return {**_git_state(), "files": files, "digest": _digest(files)}


def stamp():
    """Writes the stamp of the checkout as it is now; returns it."""
    source = from_git()
    STAMP.write_text(json.dumps(source, indent=0) + "\n")
    return source


def describe():
    """{"commit", "dirty", "how"}: from git, or from the stamp checked against the files (dirty then
    also when they changed since stamping); commit None where neither can tell."""
    try:
        return {**_git_state(), "how": "git"}  # git tells: no need to digest the files
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        stamped = json.loads(STAMP.read_text())
    except (OSError, ValueError):
        return {"commit": None, "dirty": None,
                "how": "no git checkout and no benchmarks/SOURCE.json (python -m benchmarks.source stamp before "
                       "copying the tree)"}
    same = _digest(stamped["files"]) == stamped["digest"]
    how = "stamp (files as stamped)" if same else "stamp (files changed after stamping)"
    return {"commit": stamped["commit"], "dirty": bool(stamped["dirty"]) or not same, "how": how}


def label(source=None):
    """The commit as results carry it: "25f8477", "25f8477+dirty", or "unknown (why)"."""
    source = source or describe()
    if source["commit"] is None:
        return f"unknown ({source['how']})"
    return source["commit"] + ("+dirty" if source["dirty"] else "")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["stamp"]:
        source = stamp()
        print(f"stamped {label({**source, 'how': 'git'})} in {STAMP.relative_to(ROOT)} ({len(source['files'])} files)")
        return 0
    if argv:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        print("usage: python -m benchmarks.source [stamp]", file=sys.stderr)
        return 2
    source = describe()
    print(label(source) if source["commit"] is None else f"{label(source)} (from {source['how']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
