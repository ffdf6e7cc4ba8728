"""A time model per card from the profiler's counts: which bound limits a launch, and about how
long it takes there. It ranks and explains; it is not a measurement, and every figure it gives
is labelled "modelled (<MODEL>, <card>)".

Per launch, on the SM with the most blocks (a launch of fewer blocks than SMs leaves the rest idle;
a launch of more runs in waves):
- issue: the warp instructions of its blocks (pyfast.profile.sass: SASS basic blocks x the
  emulator's executions), at 4 schedulers x `issue_efficiency` per clock, or fewer where too few
  warps are resident to hide a dependent instruction's `latency_cycles` (warps per scheduler /
  latency; each warp counting 1 + `ffma_ilp` x its FFMA share, the independent FMAs of a
  register tile);
- shared memory: its wavefronts at one per clock;
- DRAM: the launch's unique bytes at `bandwidth_efficiency` x the card's bandwidth, or its share of
  them at `sm_bandwidth_gbps` per SM where few SMs have work;
- latency: the loads each warp waits for in turn (the launch's global load requests per warp) at
  `memory_latency_cycles` each, per wave of blocks: what limits a launch of few warps with long
  loops of loads (a naive matmul on a thin shape, a reduction by few blocks);
- L2: every sector the launch's requests touch (re-reads included; L1 hits are not modelled) at
  `l2_gbps`: what limits a kernel that re-reads the same data through uncoalesced requests;
- plus `launch_us`. The time is the largest bound plus the launch; the bound is named.
Parameters: pyfast/profile/cards.json, each with where it came from (the card's specification, or
fitted by pyfast.profile.calibration on recorded GPU times, with the fit's errors).
"""

import dataclasses
import json
import math
import os

MODEL = "pyfast-model-1"
CARDS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cards.json")


def load_cards(path=CARDS_FILE):
    with open(path) as f:
        return json.load(f)


def card_named(name, cards=None):
    """The card entry whose key or aliases match `name` ("H100", "NVIDIA H200", "h200", ...)."""
    cards = cards or load_cards()
    wanted = name.lower()
    for key, card in cards["cards"].items():
        if wanted == key.lower() or any(alias.lower() in wanted for alias in card["aliases"]):
            return key, card
    raise ValueError(f"card: expected one of {', '.join(cards['cards'])}, got {name!r}")


def label(card_key):
    return f"modelled ({MODEL}, {card_key})"


@dataclasses.dataclass
class LaunchFeatures:
    """What the model reads of one launch (from counters and SASS; scaled to the whole grid)."""
    kernel: str
    blocks: int
    threads_per_block: int
    registers: int
    shared_bytes: int
    instructions: float  # warp instructions
    wavefronts: float  # shared-memory wavefronts
    dram_bytes: float  # unique bytes read + written
    instruction_mix: dict = dataclasses.field(default_factory=dict)
    load_requests: float = 0.0  # global-memory load requests (warp level)
    sectors: float = 0.0  # global-memory sectors of every request (what L2 serves, re-reads included)

    def to_json(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data):
        return cls(**data)


def features(launch, kernel_sass):
    """LaunchFeatures of a profiled Launch with its kernel's KernelSass (None: no SASS found, the
    instructions then unknown: 0)."""
    from pyfast.profile import sass

    mix = sass.dynamic_instructions(launch, kernel_sass) if kernel_sass is not None else {}
    return LaunchFeatures(kernel=launch.kernel, blocks=launch.blocks, threads_per_block=launch.threads_per_block,
                          registers=kernel_sass.registers if kernel_sass else 32,
                          shared_bytes=launch.dynamic_shared + launch.static_shared,
                          instructions=float(sum(mix.values())), wavefronts=launch.total("wavefronts", "shared"),
                          dram_bytes=float(launch.unique_read_bytes + launch.unique_write_bytes),
                          instruction_mix={k: float(v) for k, v in mix.items()},
                          load_requests=float(launch.total("requests", "global", "load")),
                          sectors=float(launch.total("sectors", "global")))


def launch_time(f, card, params):
    """(seconds, bound, {bound: seconds}) of one launch on `card` with fitted `params`."""
    from pyfast.profile.sass import occupancy

    sms = card["sms"]
    clock = card["clock_ghz"] * 1e9
    per_sm, _ = occupancy(card, f.registers, f.threads_per_block, f.shared_bytes)
    per_sm = max(per_sm, 1)
    busiest = math.ceil(f.blocks / sms) if f.blocks else 0  # blocks on the SM with the most
    warps = min(per_sm, busiest) * math.ceil(f.threads_per_block / 32)
    share = busiest / f.blocks if f.blocks else 0.0  # the busiest SM's share of the launch's work
    # Independent instructions per warp hide latency too: FFMA-heavy register tiles have many.
    ffma_share = f.instruction_mix.get("ffma", 0.0) / f.instructions if f.instructions else 0.0
    parallel = warps * (1 + params["ffma_ilp"] * ffma_share)
    rate = 4 * min(params["issue_efficiency"], parallel / (4 * params["latency_cycles"])) if warps else 1.0
    # A warp waits for its loads in turn: its requests (the launch's average) each cost
    # `memory_latency_cycles` (latency less what the compiler overlaps), once per wave of blocks.
    waves = math.ceil(busiest / per_sm) if busiest else 0
    warps_in_launch = f.blocks * math.ceil(f.threads_per_block / 32)
    chain = f.load_requests / warps_in_launch if warps_in_launch else 0.0
    terms = {
        "issue": f.instructions * share / (rate * clock) if rate else 0.0,
        "latency": waves * chain * params.get("memory_latency_cycles", 0.0) / clock,
        "shared": f.wavefronts * share / clock,
        "l2": f.sectors * 32 / (params.get("l2_gbps", math.inf) * 1e9),
        "dram": max(f.dram_bytes / (card["dram_gbps"] * 1e9 * params["bandwidth_efficiency"]),
                    f.dram_bytes * share / (params["sm_bandwidth_gbps"] * 1e9)),
    }
    bound = max(terms, key=terms.get)
    return params["launch_us"] * 1e-6 + terms[bound], bound, terms


def op_time(launches, card, params):
    """Seconds of an op made of `launches` (LaunchFeatures), launched back to back."""
    return sum(launch_time(f, card, params)[0] for f in launches)
