"""The package's layers import one way (docs/architecture.md section 2), checked from the source.

Every module under ``lrm_fast/`` (and ``kernels/``, installed as ``lrm_fast.kernels``) is parsed
with ``ast``; every import of a package module, at module level or inside a function, must go to
the same or a lower layer, and the module graph (all those imports) must have no cycle. An
import inside a function is no way around either rule.
"""
from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PKG = "lrm_fast"

# The one table of layers, lowest first (docs/architecture.md section 2 shows the same). A module
# belongs to the longest prefix listed here; a lower layer never imports a higher one.
LAYERS = {
    "lrm_fast._C": 0, "lrm_fast.kernels": 0,          # kernels: the fast code (csrc/, kernels/)
    "lrm_fast.ops": 1,                                # one file per op, twins, dispatch, extension plumbing
    "lrm_fast.field.activations": 1,                  # the field's activation table (the ops' twins apply it)
    "lrm_fast.config": 2, "lrm_fast.cameras": 2,      # configs; camera geometry (data, model, api share it)
    "lrm_fast.memory": 2,                             # the memory budget every chunked loop sizes from
    "lrm_fast.field": 3,                              # the triplane field, its occupancy grid and density bounds
    "lrm_fast.model": 3, "lrm_fast.render": 3,        # the network and the renderer
    "lrm_fast.io": 4, "lrm_fast.data": 4, "lrm_fast.mesh": 4,  # files, datasets, meshing
    "lrm_fast.texture": 4, "lrm_fast.dist": 4,        # texture baking (on meshes); torchrun ranks
    "lrm_fast.api": 5, "lrm_fast.info": 5,            # load_model, Reconstruction, info()
    "lrm_fast.batch": 6, "lrm_fast.web": 6,           # folders/batches and the web page (use the api)
    "lrm_fast.train": 6,                              # trainer, evaluation (uses the api)
    "lrm_fast.cli": 7, "lrm_fast.commands": 7,        # the CLI
    "lrm_fast": 8,                                    # the package's __init__: the public names
}


def _modules() -> dict[str, pathlib.Path]:
    """module name -> file, for lrm_fast/ (not through the kernels link of a worktree) and kernels/."""
    mods = {}
    for base, name in ((ROOT / PKG, PKG), (ROOT / "kernels", PKG + ".kernels")):
        for p in sorted(base.rglob("*.py")):
            rel = p.relative_to(base).with_suffix("").parts
            if base.name == PKG and rel[0] == "kernels":
                continue
            parts = [name, *rel]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = p
    return mods


MODULES = _modules()


def layer(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LAYERS:
            return LAYERS[".".join(parts[:n])]
    raise KeyError(f"{module}: no layer in tests/test_layers.py LAYERS; add its package there and in "
                   "docs/architecture.md")


def _target(module: str, name: str) -> str:
    """What ``from module import name`` loads: the submodule where there is one, else the module."""
    sub = f"{module}.{name}"
    return sub if sub in MODULES or sub == PKG + "._C" else module


def imports(module: str, path: pathlib.Path, source: str | None = None) -> list[tuple[str, int, bool]]:
    """(imported package module, line, inside a function) for every import of ``lrm_fast.*``."""
    tree = ast.parse(path.read_text() if source is None else source)
    in_function = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            in_function.update(id(n) for n in ast.walk(node) if n is not node)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [_target(mod, a.name) for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        out += [(t, node.lineno, id(node) in in_function) for t in dict.fromkeys(targets) if t.split(".")[0] == PKG]
    return out


def _graph() -> dict[str, set[str]]:
    return {m: {t for t, _, _ in imports(m, p)} - {m} for m, p in MODULES.items()}


def test_every_module_has_a_layer():
    missing = [m for m in MODULES if not any(m == k or m.startswith(k + ".") for k in LAYERS)]
    assert not missing, f"modules with no layer in LAYERS: {missing}"


def upward_imports(module: str, path: pathlib.Path, source: str | None = None) -> list[str]:
    return [f"{path.relative_to(ROOT)}:{line}: {module} (layer {layer(module)}) imports {t} (layer {layer(t)})"
            + (" inside a function" if fn else "")
            for t, line, fn in imports(module, path, source) if layer(t) > layer(module)]


def test_no_upward_import():
    bad = [msg for m, p in MODULES.items() for msg in upward_imports(m, p)]
    assert not bad, "imports that go up a layer (docs/architecture.md section 2):\n" + "\n".join(bad)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state:
                found = visit(t)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_no_import_cycle():
    # a package's __init__ runs before any of its modules, so an import of "lrm_fast.ops" from
    # inside lrm_fast/ops/ is an edge to its __init__ and cycles through it are real cycles too
    cycle = find_cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("module, line", [
    ("lrm_fast.model.lrm", "    from ..api import reconstruct\n"),              # inside a function
    ("lrm_fast.ops.composite", "from ..model import decoder\n"),                # at module level
    ("lrm_fast.model.encoder", "from ..io.checkpoint import read_state_dict\n"),
])
def test_an_upward_import_is_caught(module, line):
    """The checker itself: the upward imports this test was written against are found again."""
    path = MODULES[module]
    src = path.read_text()
    if line.startswith(" "):
        src += "\n\ndef _probe():\n" + line
    else:
        src = line + src
    assert upward_imports(module, path, src)


def test_a_cycle_is_caught():
    g = _graph()
    g["lrm_fast.ops.raymarch"] = g["lrm_fast.ops.raymarch"] | {"lrm_fast.ops.composite"}
    g["lrm_fast.ops.composite"] = g["lrm_fast.ops.composite"] | {"lrm_fast.ops.raymarch"}
    assert find_cycle(g)
