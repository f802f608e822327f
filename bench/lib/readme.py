"""bench.report's README writer: the Performance section between the perf markers, from the
latest result per device, with the published anchors for context."""
from __future__ import annotations

import os
import re

from bench.lib.format import markdown
from bench.lib.results import RESULTS_DIR, result_stem, write_atomic

PERF_START, PERF_END = "<!-- perf:start -->", "<!-- perf:end -->"
# the anchors' table (bench/scripts/anchors.py --readme): the originals' own code next to ours
ANCHORS_START, ANCHORS_END = "<!-- anchors:start -->", "<!-- anchors:end -->"

# Published / measured anchors, for context next to our own numbers (docs/architecture.md section 6).
ANCHORS = [
    "LRM paper (Hong et al. 2023): 5 s per image on one A100 (the paper's claim).",
    "OpenLRM: 5-6 s per image on an A100; TripoSR: < 0.5 s per image on an A100 (the projects' claims).",
    "The anchors' own code on our 2-core CPU (fp32, random weights): OpenLRM base image->triplane 8.0 s, "
    "one 288x288 view 16.9 s at 8.5 GiB peak, image->mesh ~114 s (384^3 field query ~103 s); "
    "OpenLRM small 4.0 s / 4.8 s (192x192) / ~85 s; TripoSR 16.7 s / 10.0 s (256x256) / ~34 s (256^3).",
]


def perf_section(results: list[tuple[dict, str]], stat: str = "min") -> str:
    """README text: one table per result file (GPU first), then the anchors."""
    def gpu_first(item):
        return 0 if ((item[0].get("machine_info") or {}).get("lrm_fast") or {}).get("device") == "cuda" else 1

    parts = ["Measured by `python -m bench.report`. Ratios compare our fast path with our own reference "
             "implementation (the spec) in the same run; absolute times are for context.", ""]
    for result, source in sorted(results, key=gpu_first):
        src = f" (`{source}`)" if source else ""
        parts += [f"**{result_stem(result)}**{src}", "", markdown(result, stat), ""]
    parts += ["Anchors for context (not measured by these tables):", ""] + [f"- {a}" for a in ANCHORS]
    return "\n".join(parts)


def update_readme(readme: str, section: str, start: str = PERF_START, end: str = PERF_END) -> None:
    """Replace the text between the markers ``start`` and ``end`` (each once in ``readme``) with ``section``."""
    try:
        with open(readme) as f:
            text = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"README not found: {readme}") from None
    for marker in (start, end):
        if text.count(marker) != 1:
            raise ValueError(f"{readme}: needs exactly one {marker!r} marker, found {text.count(marker)}")
    a, b = text.index(start) + len(start), text.index(end)
    if b < a:
        raise ValueError(f"{readme}: {end!r} comes before {start!r}")
    write_atomic(readme, text[:a] + "\n" + section.strip() + "\n" + text[b:])


def latest_results(directory: str = RESULTS_DIR) -> list[str]:
    """The newest ``<date>-<device>.json`` per device (e.g. the latest CPU run and the latest H100 run)."""
    pat = re.compile(r"^(\d{4}-\d{2}-\d{2})-([a-z0-9]+)\.json$")
    newest: dict[str, str] = {}
    for f in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
        m = pat.match(f)
        if m:
            newest[m.group(2)] = f  # sorted by date: the last one wins
    if not newest:
        raise FileNotFoundError(f"no <date>-<device>.json result files in {directory}; run `python -m bench.report` first")
    return [os.path.join(directory, f) for f in sorted(newest.values())]
