"""The speed model (pyfast.profile.model, sass, calibration) on the CPU: SASS and ptxas output
parsed as nvdisasm and ptxas write them, occupancy on known cases, which bound limits a launch,
and the committed calibration: the parameters in cards.json are the fit of calibration.json's
recorded points, with the errors cards.json states."""

import collections
import json

import numpy as np
import pytest

from pyfast.profile import calibration, model, sass

H100 = model.load_cards()["cards"]["H100 SXM"]


@pytest.mark.parametrize("opcode, cls", [("FFMA", "ffma"), ("FADD.FTZ", "fp32"), ("MUFU.EX2", "fp32"),
                                         ("LDG.E.128.CONSTANT", "memory"), ("STS.128", "memory"),
                                         ("ATOMG.E.ADD.F32", "memory"), ("IMAD.WIDE.U32", "integer"),
                                         ("LOP3.LUT", "integer"), ("BRA", "control"), ("BAR.SYNC.DEFER_BLOCKING",
                                                                                     "control"),
                                         ("HMMA.16816.F32.BF16", "tensor"), ("UIADD3", "uniform"),
                                         ("LDC.64", "other"), ("SHFL.BFLY", "other")])
def test_instruction_classes(opcode, cls):
    assert sass.instruction_class(opcode) == cls


SASS = """\t.target\tsm_90
_Z6kernelPf:
\t//## File "/src/kernels/x.cu", line 10
        /*0000*/                   LDC R1, c[0x0][0x28] ;
        /*0010*/                   S2R R0, SR_TID.X ;
\t//## File "/src/kernels/x.cu", line 11
        /*0020*/               @P0 BRA `(.L_x_1) ;
.L_x_0:
\t//## File "/src/kernels/x.cu", line 12
        /*0030*/                   LDG.E R2, desc[UR4][R2.64] ;
        /*0040*/                   FFMA R4, R2, R2, R4 ;
        /*0050*/                   FFMA R5, R2, R2, R5 ;
        /*0060*/              @!P1 BRA `(.L_x_0) ;
.L_x_1:
\t//## File "/src/kernels/x.cu", line 14
        /*0070*/                   STG.E desc[UR4][R6.64], R4 ;
        /*0080*/                   EXIT ;
"""


def test_sass_is_counted_per_line_and_split_into_basic_blocks():
    (name, (lines, blocks)), = sass.parse_sass(SASS).items()
    assert name == "_Z6kernelPf"
    assert {k.split("/")[-1]: dict(v) for k, v in lines.items()} == {
        "x.cu:10": {"other": 2}, "x.cu:11": {"control": 1}, "x.cu:12": {"memory": 1, "ffma": 2, "control": 1},
        "x.cu:14": {"memory": 1, "control": 1}}
    blocks = [b for b in blocks if b.classes]
    assert [sum(b.classes.values()) for b in blocks] == [3, 4, 2]  # split after each branch and at each label
    assert blocks[1].memory == collections.Counter({"x.cu:12": 1})


def _block(lines, classes, memory=None):
    return sass.SassBlock(classes=collections.Counter(classes), memory=collections.Counter(memory or {}),
                          lines=collections.Counter(lines))


def test_copies_of_unrolled_code_share_the_host_count(monkeypatch):
    """A loop nvcc unrolled four times (four identical blocks of line 20 with no load to pin them)
    runs as often in all as the host ran it, not four times that; a load pins its block to the
    requests the emulator counted; code beside it runs once per pass."""
    import types

    blocks = [_block({"k.cu:10": 3}, {"integer": 3}),
              *[_block({"k.cu:20": 20}, {"integer": 20}) for _ in range(4)],
              _block({"k.cu:30": 2}, {"memory": 1, "ffma": 1}, {"k.cu:30": 1})]
    kernel = sass.KernelSass(registers=32, spill_stores=0, spill_loads=0, stack=0, static_shared=0, lines={},
                             blocks=blocks)
    launch = types.SimpleNamespace(sites=[types.SimpleNamespace(location="/src/k.cu:30", requests=50)], scale=1.0)
    # The host ran line 20 in two blocks (an inlined helper at two call sites): 60 + 40 times.
    host_blocks = [({"k.cu:10": 1}, 10), ({"k.cu:20": 1}, 60), ({"k.cu:20": 1}, 40), ({"k.cu:30": 1}, 50)]

    def executions(_launch):
        most, total = collections.Counter(), collections.Counter()
        for lines, count in host_blocks:
            for line in lines:
                most[line], total[line] = max(most[line], count), total[line] + count
        return most, total

    monkeypatch.setattr(sass, "line_executions", executions)
    assert sass.block_executions(launch, kernel) == [10, 25, 25, 25, 25, 50]
    assert sass.dynamic_instructions(launch, kernel) == {"integer": 3 * 10 + 4 * 20 * 25, "memory": 50, "ffma": 50}


def test_ptxas_facts_are_read_per_kernel():
    log = ("ptxas info    : Compiling entry function '_Z1aPf' for 'sm_90'\n"
           "ptxas info    : Function properties for _Z1aPf\n"
           "    8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n"
           "ptxas info    : Used 96 registers, used 1 barriers, 16896 bytes smem\n"
           "ptxas info    : Compiling entry function '_Z1bPf' for 'sm_90'\n"
           "ptxas info    : Function properties for _Z1bPf\n"
           "    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
           "ptxas info    : Used 32 registers, used 0 barriers\n")
    assert sass.parse_ptxas(log) == {"_Z1aPf": (96, 4, 12, 8, 16896), "_Z1bPf": (32, 0, 0, 0, 0)}


@pytest.mark.parametrize("registers, threads, shared, blocks", [
    (63, 256, 17408, 4),    # the 64x64 tiled GEMM: registers allow 4 blocks of 8 warps
    (149, 256, 16896, 1),   # the 128x128 one: 160 registers a thread leave room for one
    (32, 256, 0, 8),        # 8 warps a block, 64 warps an SM
    (16, 32, 0, 32),        # the SM's 32-block limit
    (32, 128, 100000, 2),   # shared memory: 2 x (100000 + 1024) of 233472
])
def test_occupancy(registers, threads, shared, blocks):
    assert sass.occupancy(H100, registers, threads, shared)[0] == blocks


PARAMS = {"issue_efficiency": 0.7, "latency_cycles": 8.0, "ffma_ilp": 4.0, "bandwidth_efficiency": 0.9,
          "sm_bandwidth_gbps": 60.0, "memory_latency_cycles": 400.0, "launch_us": 3.0}


def test_the_limiting_bound_is_named():
    streaming = model.LaunchFeatures("copy", 10000, 256, 32, 0, instructions=1e6, wavefronts=0, dram_bytes=4e9)
    seconds, bound, terms = model.launch_time(streaming, H100, PARAMS)
    assert bound == "dram" and seconds == pytest.approx(3e-6 + 4e9 / (3005e9 * 0.9))
    compute = model.LaunchFeatures("gemm", 132 * 4, 256, 63, 17408, instructions=1e10, wavefronts=1e6, dram_bytes=1e6,
                                   instruction_mix={"ffma": 6e9})
    assert model.launch_time(compute, H100, PARAMS)[1] == "issue"
    # One block uses one SM: its time is that SM's, not the card's.
    one = model.LaunchFeatures("one", 1, 256, 32, 0, instructions=1e6, wavefronts=0, dram_bytes=0)
    many = model.LaunchFeatures("many", 132, 256, 32, 0, instructions=132e6, wavefronts=0, dram_bytes=0)
    assert model.launch_time(one, H100, PARAMS)[0] == pytest.approx(model.launch_time(many, H100, PARAMS)[0])
    # Few warps, each waiting for 1000 loads in turn (a naive matmul on a thin shape): latency.
    thin = model.LaunchFeatures("thin", 8, 256, 32, 0, instructions=8 * 8 * 5000, wavefronts=0, dram_bytes=1e6,
                                load_requests=8 * 8 * 1000)
    seconds, bound, _ = model.launch_time(thin, H100, PARAMS)
    assert bound == "latency" and seconds == pytest.approx(3e-6 + 1000 * 400 / (H100["clock_ghz"] * 1e9))
    # Many blocks re-reading the same 1 MB through 32-sector requests: L2, not DRAM.
    rereads = model.LaunchFeatures("rereads", 10000, 256, 32, 0, instructions=1e6, wavefronts=0, dram_bytes=1e6,
                                   load_requests=1e7, sectors=3.2e8)
    seconds, bound, _ = model.launch_time(rereads, H100, dict(PARAMS, l2_gbps=5000.0))
    assert bound == "l2" and seconds == pytest.approx(3e-6 + 3.2e8 * 32 / 5000e9)
    assert model.launch_time(rereads, H100, PARAMS)[1] != "l2"  # without the parameter: no L2 term
    assert model.label("H200") == "modelled (pyfast-model-1, H200)"
    assert model.card_named("NVIDIA H200")[0] == "H200" and model.card_named("h100")[0] == "H100 SXM"
    with pytest.raises(ValueError, match="card: expected one of"):
        model.card_named("V100")


def test_the_committed_parameters_are_the_fit_of_the_recorded_points():
    cards, points = model.load_cards(), calibration.load_points()
    assert len(points) >= 100 and {p["family"] for p in points} >= {"conv", "matmul", "elementwise", "optim"}
    assert all(p["launches"] and p["measured_ms"] > 0 for p in points)
    errors = calibration.errors(points, cards["parameters"], cards)
    assert cards["fit"]["points"] == len(points)
    assert float(np.median(np.abs(errors))) == pytest.approx(cards["fit"]["median_error"], rel=1e-3)
    # A refit from the committed parameters finds nothing markedly better.
    refit = calibration.fit(points, cards, start=cards["parameters"], rounds=1)
    assert calibration._loss(points, refit, cards) >= 0.98 * calibration._loss(points, cards["parameters"], cards)


def test_the_error_table_has_every_family_fitted_and_left_out():
    report = {"parameters": PARAMS, "all": dict(calibration.summary(np.array([0.1, -0.2])),
                                                left_out=calibration.summary(np.array([0.4]))),
              "conv": {"fitted": calibration.summary(np.array([0.1])), "left_out": calibration.summary(np.array([0.4]))}}
    text = calibration.table(report)
    assert "| conv | 1 | 10% | 10% | 100% | 40% | 40% |" in text and "| all | 2 | 15% | 20% | 100% | 40% | 40% |" in text
    json.dumps(report)  # plain data
