"""The field's activation table (``lrm_fast/field/activations.py``) is the one Python source of the
activations' names, codes and constants; the kernels, which sit below it and cannot import it,
write the same ones. These tests read the Triton and C++ sources and hold them to the table, and
check that every Python user takes its activations from it."""
from __future__ import annotations

import ast
import importlib
import pathlib
import re

import pytest
import torch

from lrm_fast.field import activations as A
from lrm_fast.ops import per_sample

# the modules (``lrm_fast.ops`` exports functions of the same names)
composite = importlib.import_module("lrm_fast.ops.composite")
triplane_mlp = importlib.import_module("lrm_fast.ops.triplane_mlp")

ROOT = pathlib.Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"

# C++ float literals: -1e4f, 1.002f, T(1.002), T(15), 20.f, 20.0f
NUM = r"-?\d+(?:\.\d*)?(?:e-?\d+)?"


def _floats(pattern: str, text: str) -> list[float]:
    """The numbers captured by ``pattern`` (one group, a C++ literal with or without ``f``)."""
    return [float(m.rstrip("f")) for m in re.findall(pattern, text)]


def _module_ints(path: pathlib.Path) -> dict[str, int]:
    """Top-level ``NAME = int`` and ``A, B = int, int`` assignments of a Python file, by ``ast``."""
    out = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign):
            for t in node.targets:
                names = [t] if isinstance(t, ast.Name) else list(getattr(t, "elts", []))
                vals = [node.value] if isinstance(t, ast.Name) else list(getattr(node.value, "elts", []))
                for n, v in zip(names, vals):
                    if isinstance(n, ast.Name) and isinstance(v, ast.Constant) and isinstance(v.value, int):
                        out[n.id] = v.value
    return out


def test_constants_are_the_originals():
    """OpenLRM's and TripoSR's numbers (the table is their one Python copy)."""
    assert A.MASKED_RAW_DENSITY == -1e4 and A.RGB_PAD == 0.001 and A.EXP_CLAMP == 15.0
    assert A.SOFTPLUS_THRESHOLD == 20.0
    assert set(A.HIDDEN) == {"relu", "silu", "softplus"}
    assert set(A.DENSITY) == {"softplus", "exp"} and set(A.RGB) == {"sigmoid_wide", "sigmoid"}
    # SILU_ARGMIN is silu's minimum: the derivative changes sign there
    x = torch.tensor([A.SILU_ARGMIN - 1e-6, A.SILU_ARGMIN + 1e-6], dtype=torch.float64, requires_grad=True)
    torch.nn.functional.silu(x).sum().backward()
    assert x.grad[0] < 0 < x.grad[1]


def test_triton_kernel_agrees_with_the_table():
    src_path = ROOT / "kernels" / "triplane_mlp.py"
    ints = _module_ints(src_path)
    assert {n: ints[f"ACT_{n.upper()}"] for n in A.HIDDEN} == {n: a.code for n, a in A.HIDDEN.items()}
    src = src_path.read_text()
    act = src[src.index("def _act("):src.index("def _act_grad(")]
    # relu / silu / softplus branches by their codes, softplus with torch's threshold
    for name, a in A.HIDDEN.items():
        assert re.search(rf"ACT == {a.code}:" if a.code < 2 else r"else:", act), name
    assert set(_floats(r"z > (" + NUM + ")", act)) == {A.SOFTPLUS_THRESHOLD}
    assert "tl.maximum(z, 0.0)" in act.split("ACT == 0:")[1].split("elif")[0]
    assert "tl.sigmoid(z)" in act.split("ACT == 1:")[1].split("else")[0]


def test_cpp_hidden_activations_agree_with_the_table():
    h = (CSRC / "triplane_mlp.h").read_text()
    enum = re.search(r"enum Activation : int \{([^}]*)\}", h).group(1)
    codes = {k: int(v) for k, v in re.findall(r"k(\w+) = (\d+)", enum)}
    assert {k.lower(): v for k, v in codes.items()} == {n: a.code for n, a in A.HIDDEN.items()}
    acts = h[h.index("inline float activate("):]
    # relu: > 0 (not a constant of the table); softplus: torch's threshold, in the value and the gradient
    assert set(_floats(r"[xz] > (" + NUM + "f?)", acts)) == {0.0, A.SOFTPLUS_THRESHOLD}
    assert len(_floats(r"[xz] > (" + NUM + "f?)", acts)) == 4


@pytest.mark.parametrize("name", ["composite_samples.h", "composite_vec_cpu_impl.h"])
def test_cpp_density_and_rgb_agree_with_the_table(name):
    """The fused compositing kernels' gate sentinel, widened sigmoid, density codes, exp clamp and
    softplus threshold are the table's (scalar/CUDA header and the vectorized CPU body)."""
    src = (CSRC / name).read_text()
    lit = r"(?:T\()?(" + NUM + r")f?\)?"
    # the gate: a sample outside the box gets the sentinel raw density
    sentinels = _floats(r"csr\[s\] = T\((" + NUM + r")\)", src) + _floats(r"sr\[j\] = select_inbox\([^;]*?(" + NUM + r")f\)", src)
    assert sentinels and set(sentinels) == {A.MASKED_RAW_DENSITY}
    # the widened sigmoid: sigmoid * (1 + 2 pad) - pad, and its derivative's scale
    scale_pad = re.findall(r"\* " + lit + r" - " + lit, src)
    assert scale_pad and {(float(a), float(b)) for a, b in scale_pad} == {(1 + 2 * A.RGB_PAD, A.RGB_PAD)}
    assert all(float(v) == 1 + 2 * A.RGB_PAD for v in re.findall(r"(1\.\d+)f? ?\)? ?\* s", src))
    # density codes: code 0 is softplus (torch's threshold), the other exp clamped at EXP_CLAMP
    assert re.search(r"if \(act == " + str(A.DENSITY["softplus"].code) + r"\) return (?:x > T\(20\)|softplus)", src)
    assert A.DENSITY["exp"].code == 1
    clamps = _floats(r"x < " + lit + r" \? x : ", src) + _floats(r"x[i]? <= " + lit + r" \?", src)
    assert clamps and set(clamps) == {A.EXP_CLAMP}
    # softplus' pass-through above the threshold, in the value and the gradient
    thresholds = _floats(r"(?:return|=) x[i]? > " + lit + r" \? (?:x|T\(1\)|1\.0f) :", src)
    assert len(thresholds) >= 2 and set(thresholds) == {A.SOFTPLUS_THRESHOLD}


def test_python_users_take_the_table():
    assert composite.DENSITY_ACTS == {n: a.code for n, a in A.DENSITY.items()}
    assert triplane_mlp._CPP_ACT == {n: a.code for n, a in A.HIDDEN.items()}
    assert triplane_mlp._ACTS == {n: a.fn for n, a in A.HIDDEN.items()}
    assert per_sample.MASKED_RAW_DENSITY is A.MASKED_RAW_DENSITY
    x = torch.linspace(-30, 30, 101)
    assert torch.equal(per_sample.rgb_activation(x), torch.sigmoid(x) * 1.002 - 0.001)
    assert torch.equal(per_sample.density_activation(x, -1.0, "exp"), torch.exp((x - 1).clamp_max(15)))
    for name, a in A.DENSITY.items():
        for s in (1e-3, 0.5, 7.0):
            assert a.fn(torch.tensor(a.inverse(s), dtype=torch.float64)).item() == pytest.approx(s, rel=1e-12)
    with pytest.raises(ValueError, match="unknown density activation 'nope' \\(softplus, exp\\)"):
        per_sample.density_activation(x, kind="nope")


def test_cephes_constants_live_in_one_header():
    """The Cephes exp/log constants are written once, in ``csrc/cephes.h``; the C++ files that
    evaluate a Cephes exp (the compositing kernels' lane exp, the fused field's AVX2 SiLU) include it."""
    consts = _floats(r"constexpr float k\w+ = (" + NUM + r")f;", (CSRC / "cephes.h").read_text())
    assert len(consts) >= 18
    literals = ("1.44269504", "0.693359375", "2.12194440e-4", "1.9875691500e-4", "7.0376836292e-2")
    for p in sorted(CSRC.rglob("*")):
        if p.suffix not in (".h", ".cpp", ".cu") or p.name == "cephes.h":
            continue
        src = p.read_text()
        assert not [c for c in literals if c in src], f"{p.name} writes a Cephes constant: use cephes.h"
        if "cephes::" in src:
            assert '#include "cephes.h"' in src or p.name == "composite_vec_cpu_impl.h", p.name
    assert '#include "cephes.h"' in (CSRC / "composite_vec_cpu.h").read_text()  # the impl's only includer
