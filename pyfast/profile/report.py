"""Tables of profiled launches, in Nsight Compute's words: one row per kernel launch, then the
worst source lines (the most sectors or wavefronts beyond the ideal)."""


def _fmt(value, digits=1):
    if value >= 1e9:
        return f"{value / 1e9:.{digits}f}G"
    if value >= 1e6:
        return f"{value / 1e6:.{digits}f}M"
    if value >= 1e4:
        return f"{value / 1e3:.{digits}f}k"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.{digits}f}"


def _ratio(numerator, denominator):
    return f"{numerator / denominator:.1f}" if denominator else "-"


def launch_table(launches, timings=None):
    """Text table: kernel, grid x block, shared bytes, sampled blocks, global requests and
    sectors per request (actual / ideal), unique bytes read / written, shared wavefronts and bank
    conflicts, barriers; with `timings` ({index: (ms, bound)}) the modelled time."""
    headers = ["#", "kernel", "grid x block", "smem", "sampled", "gld req", "sect/req", "gst req", "sect/req",
               "atom", "DRAM rd", "DRAM wr", "shared wf", "conflicts", "bar"]
    if timings:
        headers += ["modelled us", "bound"]
    rows = []
    for i, launch in enumerate(launches):
        loads = launch.total("requests", "global", "load")
        stores = launch.total("requests", "global", "store")
        row = [str(i), launch.short_name[:60],
               f"{launch.blocks}x{launch.threads_per_block}", _fmt(launch.dynamic_shared + launch.static_shared),
               f"{launch.sampled_blocks}/{launch.blocks}", _fmt(loads),
               f"{_ratio(launch.total('sectors', 'global', 'load'), loads)}/"
               f"{_ratio(launch.total('ideal_sectors', 'global', 'load'), loads)}",
               _fmt(stores),
               f"{_ratio(launch.total('sectors', 'global', 'store'), stores)}/"
               f"{_ratio(launch.total('ideal_sectors', 'global', 'store'), stores)}",
               _fmt(launch.total("requests", "global", "atomic")),
               _fmt(launch.unique_read_bytes) + ("~" if launch.unique_estimated else ""),
               _fmt(launch.unique_write_bytes) + ("~" if launch.unique_estimated else ""),
               _fmt(launch.total("wavefronts", "shared")),
               _fmt(launch.total("wavefronts", "shared") - launch.total("ideal_wavefronts", "shared")),
               _fmt(launch.barriers * launch.scale)]
        if timings:
            seconds, bound = timings.get(i, (None, ""))
            row += ["-" if seconds is None else f"{seconds * 1e6:.1f}", bound]
        rows.append(row)
    return _table(headers, rows)


def worst_lines(launches, count=10):
    """The source lines with the most excess: sectors beyond the ideal (global) or wavefronts
    beyond one per phase (shared), scaled to whole launches."""
    excess = {}
    for launch in launches:
        for s in launch.sites:
            if s.space == "global":
                extra, actual, ideal = s.sectors - s.ideal_sectors, s.sectors_per_request, s.ideal_per_request
                what = f"global {s.op}, {actual:.1f} sectors/request, ideal {ideal:.1f}"
            else:
                extra = s.wavefronts - s.ideal_wavefronts
                what = (f"shared {s.op}, {s.wavefronts / s.requests if s.requests else 0:.1f} wavefronts/request, "
                        f"ideal {s.ideal_per_request:.1f}")
            key = (s.location, what)
            entry = excess.setdefault(key, [0.0, 0.0, launch.short_name])
            entry[0] += extra * launch.scale
            entry[1] += s.requests * launch.scale
    # Lines within 5% of a sector (or wavefront) per request of their ideal are not listed.
    ranked = sorted(((v[0], k[0], k[1], v[1], v[2]) for k, v in excess.items() if v[0] > 0.05 * v[1]), reverse=True)
    lines = [f"{location}: {what} ({_fmt(requests)} requests, {_fmt(extra)} excess; {kernel[:50]})"
             for extra, location, what, requests, kernel in ranked[:count]]
    return "\n".join(lines) if lines else "(no line above its ideal)"


def _table(headers, rows):
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    out = ["  ".join(str(h).rjust(w) for h, w in zip(headers, widths)),
           "  ".join("-" * w for w in widths)]
    out += ["  ".join(str(c).rjust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(out)
