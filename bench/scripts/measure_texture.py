"""Textured vs vertex-coloured mesh export, timed stage by stage in one run (issue 17, item 2).

    python -m bench.scripts.measure_texture [--model assets/demo] [--size 1024] [--faces none,20000,5000] [--threads N] [--out FILE]

On the shipped sample: the vertex-coloured export (marching cubes + vertex colours, then the GLB)
next to the textured one at ``--size`` for each face budget (decimation, xatlas, bake = rasterize +
field query + dilation, GLB). One round each (xatlas on a full marching-cubes mesh takes tens of
seconds on a CPU); the load average is printed, so compare ratios within one run only.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch
import trimesh
from PIL import Image

import lrm_fast
from lrm_fast.io.export import save_mesh, save_textured_mesh
from lrm_fast.texture import bake_texture, decimate, field_color_fn, unwrap

SAMPLE = os.path.join(os.path.dirname(lrm_fast.__file__), "assets", "sample.png")


def _t(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="model (default: the shipped demo model)")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--faces", default="none,20000,5000", help="comma list of face budgets; none = no decimation")
    p.add_argument("--out", default=None, help="also write the markdown table here")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (on a loaded machine 1 avoids OpenMP threads waiting on each other)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    budgets = [None if f.strip() == "none" else int(f) for f in a.faces.split(",")]
    model = lrm_fast.load_model(a.model)
    rec = model.reconstruct(SAMPLE)
    planes = rec.triplane[:1]
    color = field_color_fn(model, planes)
    load0 = os.getloadavg()
    lines = [f"model {a.model or 'demo (shipped)'}, sample image, texture {a.size}x{a.size}, torch threads "
             f"{torch.get_num_threads()}, load average at start {load0[0]:.1f}", "",
             "| export | faces | mesh (MC + vertex colours) | decimate | xatlas | bake | GLB write | total | total / vertex-colour |",
             "|---|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as d:
        mesh, t_mesh = _t(lambda: rec.mesh())
        _, t_glb = _t(lambda: save_mesh(mesh, os.path.join(d, "v.glb")))
        base = t_mesh + t_glb
        lines.append(f"| vertex colours | {len(mesh.faces)} | {t_mesh:.2f} s | - | - | - | {t_glb:.2f} s | {base:.2f} s | 1 |")
        for budget in budgets:
            V, F = np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces, np.int64)
            t_dec = 0.0
            if budget is not None:
                (V, F), t_dec = _t(lambda: decimate(V, F, budget))
            (vmap, Fu, uv), t_uv = _t(lambda: unwrap(V, F, a.size))
            (img, covered), t_bake = _t(lambda: bake_texture(color, V[vmap], Fu, uv, a.size))
            # the file: the mesh texture_mesh() builds from these pieces
            mat = trimesh.visual.material.PBRMaterial(name="lrm_fast", baseColorTexture=Image.fromarray(img),
                                                      metallicFactor=0.0, roughnessFactor=1.0)
            tm = trimesh.Trimesh(V[vmap], Fu, visual=trimesh.visual.TextureVisuals(uv=uv, material=mat), process=False)
            _, t_out = _t(lambda: save_textured_mesh(tm, os.path.join(d, "t.glb")))
            total = t_mesh + t_dec + t_uv + t_bake + t_out
            lines.append(f"| texture, faces {budget or 'all'} | {len(F)} | {t_mesh:.2f} s | {t_dec:.2f} s | {t_uv:.2f} s | "
                         f"{t_bake:.2f} s ({int(covered.sum())} texels) | {t_out:.2f} s | {total:.2f} s | {total / base:.1f} |")
            print(lines[-1], flush=True)
    lines += ["", f"load average at end {os.getloadavg()[0]:.1f}"]
    text = "\n".join(lines)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
