"""The docs name real things: every file path and every ``lrm_fast.*`` name written in backticks in
README.md and docs/ exists (a moved or renamed file, function or op shows up here, not in a reader's
failed search). Paths are looked up from the repository root, from the Markdown file's folder, and,
for a bare file name (``composite.h``), anywhere in the tree; names that belong to the originals
(OpenLRM's, TripoSR's files), to outputs a command writes, or to examples are listed in ``NOT_OURS``."""
from __future__ import annotations

import importlib
import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md"] + sorted(
    os.path.relpath(os.path.join(d, f), ROOT)
    for d, _, fs in os.walk(os.path.join(ROOT, "docs")) for f in fs if f.endswith(".md"))

# names in the docs that are not files of this repository, on purpose
NOT_OURS = {
    "configs/infer-s.yaml",       # OpenLRM's own inference config
    "run.py",                     # TripoSR's own script
    "x/y/photo.png",              # an example path
    "curves.png", "eval.json", "pictures.png",   # files `lrm-fast train` writes into its run folder
    "stages.npz", "preprocessor_config.json",    # files of a checkpoint / fixture folder, by role
    "model.safetensors", "config.json", "config.yaml",
    "ops.py",                     # pytorch/extension-cpp's, named as the model for ops/_ext.py
}
PATH = re.compile(r"^[\w.\-/]*[\w\-]/?[\w.\-]*\.(py|md|sh|h|cpp|cu|yaml|yml|json|toml|ini|png|safetensors|txt|npz)$")
NAME = re.compile(r"^lrm_fast(\.\w+)+$")


def _tracked() -> set[str]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    return set(out.stdout.split())


def _spans(doc: str):
    text = open(os.path.join(ROOT, doc), encoding="utf-8").read()
    text = re.sub(r"```.*?```", "", text, flags=re.S)     # code blocks: commands, checked elsewhere
    for m in re.finditer(r"`([^`\s]+)`", text):
        yield m.group(1).split("::")[0].rstrip(".,;:")


def _exists(path: str, doc: str, tracked: set[str], basenames: set[str]) -> bool:
    p = re.sub(r":\d+(-\d+)?$", "", path)
    if p in NOT_OURS or p.startswith(("-", "<")):     # "-run2.json": a suffix of the name before it
        return True
    here = os.path.normpath(os.path.join(os.path.dirname(doc), p))
    if p in tracked or here in tracked or os.path.exists(os.path.join(ROOT, p)):
        return True
    if any(t.startswith(p.rstrip("/") + "/") or t.endswith("/" + p) for t in tracked):  # a folder, a tail
        return True
    return "/" not in p and p in basenames


@pytest.mark.parametrize("doc", DOCS)
def test_paths_in_docs_exist(doc):
    tracked = _tracked()
    basenames = {os.path.basename(t) for t in tracked}
    missing = sorted({p for p in _spans(doc) if PATH.match(p) and not _exists(p, doc, tracked, basenames)})
    assert not missing, f"{doc} names files that do not exist: {missing}"


def _resolves(name: str) -> bool:
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for a in parts[i:]:
                obj = getattr(obj, a)
        except AttributeError:
            return False
        return True
    return False


@pytest.mark.parametrize("doc", DOCS)
def test_lrm_fast_names_in_docs_exist(doc):
    missing = sorted({n for n in _spans(doc) if NAME.match(n) and not _resolves(n)})
    assert not missing, f"{doc} names lrm_fast attributes that do not exist: {missing}"
