"""The CPU half of the benchmarks: report generation and run comparison from recorded JSON
(the H200 run committed under benchmarks/results/), and the harness's pure arithmetic."""

import copy
import json
import os
import sys
from pathlib import Path

import pytest

from benchmarks import compare, report

RECORDED = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "nvidia-h200-2026-11-26"


@pytest.fixture(scope="module")
def recorded():
    return report.load_results([RECORDED / "results.json"])


def test_per_family_files_merge_into_the_recorded_results(recorded):
    merged = report.load_results(sorted((RECORDED / "families").glob("*.json")))
    assert merged["families"].keys() == recorded["families"].keys() >= {"matmul", "loss", "optim", "elementwise"}
    assert merged["info"]["device"] == "NVIDIA H200"
    assert merged["ceilings"]["copy_gbps"] > 1000 and merged["ceilings"]["cublas_fp32_tflops"] > 10


def test_report_has_a_table_per_family_with_ratios_and_ceilings(recorded, tmp_path):
    text = report.markdown(recorded)
    assert "# pyfast benchmarks on NVIDIA H200" in text and "device-to-device copy" in text
    for family in recorded["families"]:
        assert f"## {family}" in text
    row = next(line for line in text.splitlines() if line.startswith("| square 4096 | matmul tiled |"))
    cells = [c.strip() for c in row.split("|")]
    assert cells[4] == "cuBLAS FP32" and float(cells[6]) == pytest.approx(2.6937 / 3.5694, abs=0.01)
    path = report.write_report(recorded, tmp_path)
    assert path.read_text().startswith("# pyfast benchmarks")
    lines = (tmp_path / "results.csv").read_text().splitlines()
    assert lines[0].startswith("family,case,op,ms") and len(lines) > 40


def test_charts_are_drawn_when_matplotlib_is_there(recorded, tmp_path):
    pytest.importorskip("matplotlib")
    assert {"ratio.png", "roofline.png", "matmul.png"} <= set(report.charts(recorded, tmp_path))
    assert (tmp_path / "roofline.png").stat().st_size > 1000


def test_readme_section_is_regenerated_between_markers(recorded, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.README_START}\nstale\n{report.README_END}\noutro\n")
    report.update_readme(readme, recorded)
    text = readme.read_text()
    assert "stale" not in text and text.startswith("intro\n") and text.endswith("outro\n")
    assert "| matmul | square 4096 | matmul tiled |" in text
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="no benchmark markers"):
        report.update_readme(readme, recorded)


def test_compare_finds_what_changed(recorded):
    rows, only_old, only_new = compare.compare(recorded, recorded)
    assert rows and all(r[-1] == "unchanged" for r in rows) and not only_old and not only_new
    faster = copy.deepcopy(recorded)
    for r in faster["families"]["loss"]:
        r["ms"] /= 2
    del faster["families"]["optim"]
    rows, only_old, _ = compare.compare(recorded, faster)
    verdicts = {(r[0], r[1]): r[-1] for r in rows}
    assert verdicts[("loss", "cross_entropy 65536x1000")] == "faster"
    assert verdicts[("matmul", "square 4096")] == "unchanged"
    assert {key[0] for key in only_old} == {"optim"}
    other = copy.deepcopy(recorded)
    other["info"]["device"] = "NVIDIA H100 80GB HBM3"
    with pytest.raises(ValueError, match="different cards"):
        compare.compare(recorded, other)


def test_compare_cli_prints_a_table(capsys):
    assert compare.main([str(RECORDED / "results.json"), str(RECORDED / "results.json")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| family | case | op |") and "0 faster, 0 slower" in out


def test_recorded_results_say_where_they_came_from():
    content = json.loads((RECORDED / "results.json").read_text())
    assert {"device", "driver", "cupy", "date"} <= content["info"].keys()
    assert all(r.get("correct") is not False for rows in content["families"].values() for r in rows)


def test_tensor_core_rows_are_held_against_cublas_in_their_precision():
    shape = dict(case="square 4096", m=4096, n=4096, k=4096, trans_a=False, trans_b=False, correct=True)
    rows = [dict(shape, version="cublas", ms=2.0, tflops=68.7, ratio=1.0),
            dict(shape, version="tiled", baseline="cublas", ms=2.5, tflops=55.0, ratio=0.8),
            dict(shape, version="cublas tf32", ms=0.4, tflops=343.6, ratio=1.0),
            dict(shape, version="tensor_core tf32", baseline="cublas tf32", ms=0.8, tflops=171.8, ratio=0.5)]
    unified = {r["op"]: r for r in report.unified_rows("matmul", rows)}
    assert set(unified) == {"matmul tiled", "matmul tensor_core tf32"}  # baselines are not rows of their own
    tc = unified["matmul tensor_core tf32"]
    assert (tc["baseline"], tc["baseline_ms"], tc["ratio"], tc["fp32"]) == ("cuBLAS TF32", 0.4, 0.5, False)
    assert unified["matmul tiled"]["baseline"] == "cuBLAS FP32" and unified["matmul tiled"]["baseline_ms"] == 2.0
    ceilings = {"cublas_fp32_tflops": 68.7}
    assert report.percent_of_ceiling(tc, ceilings) is None  # a TF32 rate is not a share of the FP32 peak
    assert report.percent_of_ceiling(unified["matmul tiled"], ceilings) == pytest.approx(0.8, abs=0.01)


def test_matmul_family_file_with_tensor_core_rows_makes_a_report(tmp_path):
    pytest.importorskip("matplotlib")
    rows = []
    for size, fp32, tiled, tf32, ours_tf32 in [(1024, 0.06, 0.08, 0.01, 0.02), (4096, 2.7, 3.6, 0.4, 0.9)]:
        shape = dict(case=f"square {size}", m=size, n=size, k=size, trans_a=False, trans_b=False, correct=True)
        flop = 2.0 * size**3
        rows += [dict(shape, version="cublas", ms=fp32, tflops=flop / fp32 / 1e9, ratio=1.0),
                 dict(shape, version="tiled", baseline="cublas", ms=tiled, tflops=flop / tiled / 1e9,
                      ratio=fp32 / tiled),
                 dict(shape, version="cublas tf32", ms=tf32, tflops=flop / tf32 / 1e9, ratio=1.0),
                 dict(shape, version="tensor_core tf32", baseline="cublas tf32", ms=ours_tf32,
                      tflops=flop / ours_tf32 / 1e9, ratio=tf32 / ours_tf32)]
    path = tmp_path / "matmul-test-card-2026-11-26.json"
    info = {"device": "Test Card", "date": "2026-11-26T00:00:00+00:00"}
    path.write_text(json.dumps({"family": "matmul", "info": info, "rows": rows}))
    assert report.main([str(path), "--out", str(tmp_path)]) == 0
    text = (tmp_path / "report.md").read_text()
    assert "matmul tensor_core tf32" in text and "cuBLAS TF32" in text
    assert (tmp_path / "matmul.png").stat().st_size > 1000


def test_tuning_table_update_keeps_other_cards_and_classes(tmp_path, capsys):
    import json

    from benchmarks import harness

    path = tmp_path / "table.json"
    info = {"device": "Card A", "date": "d", "driver_cuda_version": 13000, "git_commit": "abc"}
    harness.update_tuning_table(path, info, {"k1": {"plan": [3, 0]}}, "about")
    harness.update_tuning_table(path, dict(info, device="Card B"), {"k1": {"plan": [2, -1]}}, "about")
    harness.update_tuning_table(path, info, {"k2": {"plan": [1, -1]}}, "about")
    data = json.loads(path.read_text())
    assert data["format"] == 1 and data["about"] == "about"
    assert data["cards"] == {"Card A": {"k1": {"plan": [3, 0]}, "k2": {"plan": [1, -1]}},
                             "Card B": {"k1": {"plan": [2, -1]}}}
    harness.update_tuning_table(path, info, {"k3": {"plan": [0, -1]}}, "about", dry_run=True)
    assert "k3" not in path.read_text() and '"k3"' in capsys.readouterr().out


def _png_size(path):
    """(width, height) in pixels, from a PNG's IHDR chunk."""
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", path
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_a_report_from_the_same_results_rewrites_no_chart(tmp_path):
    """Charts are compared by what they show (the digest of the results they carry, and their
    size), never by the bytes a particular matplotlib writes: those change between versions."""
    import shutil

    pytest.importorskip("matplotlib")
    results = RECORDED / "results.json"
    committed = {p.name: p for p in RECORDED.glob("*.png")}
    assert committed, "the recorded run has charts"
    # Drawn afresh: each chart carries the same digest as the committed one, at the same size.
    report.main([str(results), "--out", str(tmp_path / "fresh")])
    for name, path in committed.items():
        digest = report._png_text(path, "pyfast-results")
        assert digest and report._png_text(tmp_path / "fresh" / name, "pyfast-results") == digest, name
        assert _png_size(tmp_path / "fresh" / name) == _png_size(path), name
    # Into a folder already holding the committed charts: none is rewritten (their digest says
    # they show these results), however this matplotlib would draw them.
    kept = tmp_path / "kept"
    kept.mkdir()
    for name, path in committed.items():
        shutil.copyfile(path, kept / name)
        os.utime(kept / name, (0, 0))
    report.main([str(results), "--out", str(kept)])
    for name, path in committed.items():
        assert (kept / name).stat().st_mtime == 0 and (kept / name).read_bytes() == path.read_bytes(), name
    # Other results give another digest, so their charts are redrawn.
    other = json.loads(results.read_text())
    other["families"]["loss"][0]["ms"] *= 2
    (tmp_path / "other.json").write_text(json.dumps(other))
    report.main([str(tmp_path / "other.json"), "--out", str(kept)])
    assert (kept / "ratio.png").stat().st_mtime != 0
    assert report._png_text(kept / "ratio.png", "pyfast-results") != report._png_text(committed["ratio.png"],
                                                                                        "pyfast-results")
    assert report._png_text(tmp_path / "fresh" / "ratio.png", "Software") is None  # no tool version in the files


@pytest.mark.parametrize("device, build_fails, reason", [
    (True, True, "the build failed: error: nvcc failed on kernels/x.cu"),
    (False, False, "no usable GPU: no CUDA device is visible"),  # CuPy sees none: before building
    (True, False, "no usable GPU: the built pyfast cannot use it"),  # CuPy sees one, the build cannot use it
])
def test_gpu_check_stops_where_nothing_after_can_work(tmp_path, device, build_fails, reason):
    """No usable GPU, or a failed build, ends the run at once with its reason (not with the later
    steps failing one by one and tar missing its results); a machine without a GPU is found
    before the build's minutes."""
    import subprocess

    pip = "echo 'error: nvcc failed on kernels/x.cu'; exit 1" if build_fails else "exit 0"
    cupy = "exit 0" if device else "echo 'no CUDA device is visible'; exit 1"
    fake = tmp_path / "python"  # CuPy sees a device (or not); pip builds (or not); pyfast cannot use the GPU
    fake.write_text(f'#!/bin/sh\ncase "$*" in *getDeviceCount*) {cupy};; esac\n'
                    f'if [ "$2" = pip ]; then {pip}; fi\necho "the built pyfast cannot use it"; exit 1\n')
    fake.chmod(0o755)
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.sh"
    result = subprocess.run(["bash", str(script), "quick"], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHON": str(fake), "OUT": str(tmp_path / "out")})
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"=== gpu_check: {reason}; stopping" in result.stdout
    assert "=== tests" not in result.stdout and "Cannot stat" not in result.stdout + result.stderr
    assert ("=== build" in result.stdout) == device


def test_a_tree_copied_without_git_knows_its_commit_from_its_stamp(tmp_path):
    """What a lent GPU machine gets: the files without .git. The stamp says the commit; a file
    changed after stamping makes the source dirty, and no stamp at all is said plainly."""
    import shutil
    import subprocess

    from benchmarks import source

    root = Path(__file__).resolve().parent.parent
    try:
        files = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True).stdout.split()
        here = source.from_git()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    copy = tmp_path / "copy"
    for name in files:
        if (root / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / name, copy / name)
    (copy / "benchmarks" / "SOURCE.json").write_text(json.dumps(here))

    def describe():
        out = subprocess.run([sys.executable, "-m", "benchmarks.source"], cwd=copy, capture_output=True, text=True,
                             env={**os.environ, "GIT_DIR": str(tmp_path / "no-git")})
        return out.stdout.strip()

    expected = here["commit"] + ("+dirty" if here["dirty"] else "")
    assert describe() == f"{expected} (from stamp (files as stamped))"
    (copy / "README.md").write_text("changed on the machine")
    assert describe() == f"{here['commit']}+dirty (from stamp (files changed after stamping))"
    (copy / "benchmarks" / "SOURCE.json").unlink()
    assert describe().startswith("unknown (no git checkout and no benchmarks/SOURCE.json")


def test_modelled_figures_are_labelled_and_kept_out_of_measured_reports():
    modelled = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "modelled"
    files = sorted(modelled.glob("*/modelled.json"))
    assert files, "benchmarks/results/modelled holds the modelled run"
    for path in files:
        content = json.loads(path.read_text())
        assert content["label"].startswith("modelled (") and content["model"] == path.parent.name
        assert all(f"{card} ms" in row for row in content["rows"] for card in ("H100 SXM", "H200"))
        with pytest.raises(ValueError, match="modelled figures"):
            report.load_results([path])
