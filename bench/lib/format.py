"""bench.report's tables: the fast/reference ratio table of one run (markdown) and the report
written next to a result JSON."""
from __future__ import annotations

from bench.lib.results import cases, pair, result_stem


def one_line(e: BaseException, limit: int = 300) -> str:
    """An exception as one table cell: its type and message, whitespace folded, at most ``limit`` chars."""
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}"[:limit]


def _t(x: float | None) -> str:
    if x is None:
        return "-"
    if x >= 1:
        return f"{x:.2f} s"
    if x >= 1e-3:
        return f"{x * 1e3:.2f} ms"
    return f"{x * 1e6:.1f} us"


def _m(x: float | None) -> str:
    return "-" if x is None else (f"{x / 1024:.2f} GiB" if x >= 1024 else f"{x:.1f} MiB")


def _r(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def machine_line(result: dict) -> str:
    mi = result.get("machine_info") or {}
    lf = mi.get("lrm_fast") or {}
    if lf.get("device") == "cuda":
        hw = f"{lf.get('gpu', 'GPU')} (driver {lf.get('driver', '?')}, CUDA {lf.get('torch_cuda', '?')})"
    else:
        cpu = (mi.get("cpu") or {}).get("brand_raw") or mi.get("processor") or "CPU"
        hw = f"{cpu}, {lf.get('cpu_count', '?')} cores ({lf.get('torch_threads', '?')} torch threads)"
    vers = ", ".join(f"{k} {lf[k]}" for k in ("torch", "triton", "xformers", "timm") if k in lf)
    when = result.get("datetime", "")[:19].replace("T", " ")
    mode = lf.get("lrm_fast_mode", "?")
    return f"{hw}; {vers}; mode {mode}; run {when} UTC".strip()


def markdown(result: dict, stat: str = "min", baseline: dict | None = None) -> str:
    rows = pair(cases(result, stat))
    base = {}
    if baseline is not None:
        base = {(r.stage, r.size, r.device, r.dtype, r.backend): r.speedup for r in pair(cases(baseline, stat))}
    lines = [f"Machine: {machine_line(result)}", "",
             f"Speedup = reference / fast {stat} time; memory = reference / fast peak (both from this one run).", ""]
    head = "| stage | size | device | dtype | fast path | reference | fast | speedup | ref peak | fast peak | memory |"
    sep = "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|"
    if baseline is not None:
        head, sep = head + " baseline speedup |", sep + "---:|"
    lines += [head, sep]
    for r in rows:
        sp = "same path" if r.same_path and r.ref is not r.fast else _r(r.speedup)
        if r.ref is r.fast:
            sp = "no fast case"
        cells = [r.stage, r.size, r.device, r.dtype, r.backend, _t(r.ref.time_s if r.ref else None),
                 _t(r.fast.time_s) if r.ref is not r.fast else "-", sp,
                 _m(r.ref.mem_mb if r.ref else None), _m(r.fast.mem_mb) if r.ref is not r.fast else "-",
                 "-" if r.ref is r.fast else ("same path" if r.same_path else _r(r.mem_ratio))]
        if baseline is not None:
            cells.append(_r(base.get((r.stage, r.size, r.device, r.dtype, r.backend))))
        lines.append("| " + " | ".join(cells) + " |")
    notes = sorted({f"{r.stage}: {r.fast.note}" for r in rows if r.fast.note})
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    if not rows:
        lines.append("| (no timed cases recorded) |" + " |" * 10)
    rates = train_rates(rows)
    if rates:
        lines += ["", rates]
    return "\n".join(lines)


def _per_min(c) -> str:
    return "-" if c is None or not c.time_s else f"{60.0 / c.time_s:.1f}"


def train_rates(rows) -> str:
    """Training steps per minute (60 / the step's time) of each ``train_step`` row, with the torch
    thread count it ran on: the figure a user of ``lrm-fast train`` sees on the progress bar."""
    rows = [r for r in rows if r.stage == "train_step"]
    if not rows:
        return ""
    lines = ["Training steps per minute:", "",
             "| size | device | dtype | threads | reference | fast |", "|---|---|---|---:|---:|---:|"]
    for r in rows:
        thr = r.fast.extra.get("threads", (r.ref.extra if r.ref else {}).get("threads", "-"))
        lines.append(f"| {r.size} | {r.device} | {r.dtype} | {thr} | {_per_min(r.ref)} | "
                     f"{_per_min(r.fast) if r.ref is not r.fast else '-'} |")
    return "\n".join(lines)


def full_report(result: dict, stat: str = "min", baseline: dict | None = None) -> str:
    """The .md written next to a result JSON: table, kernel paths, roofline where known."""
    lf = (result.get("machine_info") or {}).get("lrm_fast") or {}
    parts = [f"# lrm_fast benchmarks {result_stem(result)}", "", markdown(result, stat, baseline), ""]
    paths = lf.get("kernel_paths")
    if isinstance(paths, dict):
        parts += ["## Kernel paths (backend='auto')", ""]
        for where, lines in paths.items():
            parts += [f"{where}:", ""] + [f"- {x}" for x in lines] + [""]
    if lf.get("device") == "cuda":
        try:
            from bench.lib.roofline import achieved_table

            parts += ["## Roofline", "", achieved_table(result, stat=stat), ""]
        except Exception as e:  # noqa: BLE001 - the ratio table matters more than the roofline
            parts += [f"(roofline unavailable: {type(e).__name__}: {e})", ""]
    return "\n".join(parts)
