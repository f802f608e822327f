"""``bench/scripts/mesh_memory.py`` at a tiny size: each case in a fresh process reports its time,
its peak RSS and its result; the mesh is the same under every budget."""
import os

import pytest

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmHWM from /proc")


def test_mesh_memory_bench_tiny(tmp_path):
    from bench.scripts.mesh_memory import main, run_case

    out = tmp_path / "table.md"
    assert main(["--mesh", "40", "--view", "", "--budgets", "default,16MB", "--out", str(out)]) == 0
    text = out.read_text()
    assert "| mesh 40 | default |" in text and "| mesh 40 | 16MB |" in text and "load average" in text
    faces = [line.split("|")[6] for line in text.splitlines() if line.startswith("| mesh 40")]
    assert len(faces) == 2 and faces[0] == faces[1] and "faces" in faces[0]
    view = run_case("view", 12, "16MB", timeout=600)
    assert view["peak_rss_mib"] > 0 and view["seconds"] > 0 and 0 <= view["mean_opacity"] <= 1
