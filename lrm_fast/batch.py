"""Folders and lists of images: ``reconstruct_many`` (the API behind ``lrm-fast reconstruct DIR``).

    import lrm_fast
    model = lrm_fast.load_model()
    summary = lrm_fast.reconstruct_many(model, "photos/", "outputs", formats=("glb", "mp4"), batch_size=8)
    print(summary.line())          # done 41, skipped 0, failed 1 of 42 images in 95.1 s (0.43 images/s)

Inputs (``list_inputs``): image files, folders (every ``.png .jpg .jpeg .webp`` directly in it, sorted by
name) and ``.txt`` lists (one path per line, relative to the list file; blank lines and ``#`` comments
are ignored). Each image ``a/b/photo.png`` writes ``OUT/photo/photo.{glb,mp4,...}`` like the
single-image case; two inputs with the same file stem are refused up front (their outputs would
collide).

* **Batches**: ``batch_size`` images go through the encoder and decoder together; meshes and videos
  are made per image. Decoding and preprocessing run in ``workers`` worker processes (a torch
  ``DataLoader``) while the model runs.
* **Resumable**: every output file is written atomically, and last of all ``OUT/<stem>/<stem>.done.json``
  (the input's size and mtime, the settings and the files written). An input whose record exists,
  matches the input and the settings, and whose files all exist is skipped; anything else (a run
  killed half-way through an image, other settings, a changed input) is redone. ``overwrite=True``
  redoes everything.
* **Bad files** (missing, not an image, too small, ...) and any error while making one image's
  outputs are reported in one line each and counted as failed; the run goes on.
* **torchrun**: with ``WORLD_SIZE=W`` and ``RANK=r`` in the environment (``lrm_fast.dist``, the
  trainer's helper), this process takes the images ``i`` with ``i % W == r`` of the full sorted list;
  the caller puts the model on ``cuda:<LOCAL_RANK>``. No process group is needed: the sharding is a
  pure function of the list and the environment, so no process waits on another (a closing
  collective would block on the slowest rank and hang on a crashed one); each rank reports its own
  summary and torchrun's exit code is non-zero when any rank's is.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field

import torch

from .api import Reconstruction, check_max_memory, input_spec, prepare_image, preprocess_mode, reconstruct_prepared
from .io.background import resolve_method
from .dist import dist_info
from .io.export import atomic_path, check_formats
from .model.lrm import LRM

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
LIST_EXTENSIONS = (".txt",)
RECORD_SUFFIX = ".done.json"


def read_list(path: str) -> list[str]:
    """A ``.txt`` list: one image path per line, relative to the list's folder; ``#`` starts a comment."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"list file not found: {path}")
    base = os.path.dirname(os.path.abspath(path))
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file of image paths (not UTF-8)") from None
    out = []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(os.path.normpath(os.path.join(base, os.path.expanduser(line))))
    if not out:
        raise ValueError(f"{path}: the list names no images (one path per line, # for comments)")
    return out


def list_folder(path: str) -> list[str]:
    """Every ``.png .jpg .jpeg .webp`` file directly in ``path`` (any case), sorted by name."""
    names = sorted(n for n in os.listdir(path)
                   if n.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(path, n)))
    if not names:
        raise ValueError(f"{path}: folder holds no {'/'.join(e[1:] for e in IMAGE_EXTENSIONS)} images")
    return [os.path.join(path, n) for n in names]


def list_inputs(sources) -> list[str]:
    """Image paths from files, folders and ``.txt`` lists (see the module docstring), in order,
    duplicates dropped. A source that does not exist is an error (a typo should not run for an hour);
    a missing file named *inside* a list is left in and fails alone."""
    sources = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    if not sources:
        raise ValueError("no inputs given")
    out: list[str] = []
    for s in map(os.fspath, sources):
        if os.path.isdir(s):
            out += list_folder(s)
        elif s.lower().endswith(LIST_EXTENSIONS):
            out += read_list(s)
        elif os.path.exists(s):
            out.append(s)
        else:
            raise FileNotFoundError(f"image file not found: {s}")
    seen, unique = set(), []
    for p in out:
        key = os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def output_names(paths: list[str]) -> list[str]:
    """The output stem of each input (file name without extension); collisions are an error."""
    names = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    by_name: dict[str, list[str]] = {}
    for n, p in zip(names, paths):
        by_name.setdefault(n, []).append(p)
    clash = {n: ps for n, ps in by_name.items() if len(ps) > 1}
    if clash:
        n, ps = next(iter(clash.items()))
        raise ValueError(f"{len(clash)} output name(s) used by several inputs, e.g. {n!r}: {', '.join(ps[:3])} "
                         "(outputs go to OUT/<file stem>/; rename the files or run them separately)")
    return names


def shard(n: int, rank: int, world: int) -> list[int]:
    """The indices this process takes: ``i % world == rank``."""
    if not (world >= 1 and 0 <= rank < world):
        raise ValueError(f"bad rank {rank} of world size {world}")
    return list(range(rank, n, world))


def _input_stat(path: str) -> dict:
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def record_path(out_dir: str, name: str) -> str:
    return os.path.join(out_dir, name, name + RECORD_SUFFIX)


def is_done(path: str, out_dir: str, name: str, settings: dict) -> bool:
    """True when ``path``'s outputs are complete: its record matches the input and ``settings``, and
    every file it lists exists."""
    rec = record_path(out_dir, name)
    try:
        with open(rec) as f:
            r = json.load(f)
        if r.get("settings") != settings or r.get("input") != _input_stat(path):
            return False
        return all(os.path.isfile(os.path.join(out_dir, name, f)) for f in r["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _write_record(path: str, out_dir: str, name: str, settings: dict, files: list[str]) -> str:
    rec = record_path(out_dir, name)
    body = {"source": os.path.abspath(path), "input": _input_stat(path), "settings": settings,
            "files": sorted(os.path.relpath(f, os.path.join(out_dir, name)) for f in files)}
    tmp = atomic_path(rec)
    try:
        with open(tmp, "w") as f:
            json.dump(body, f, indent=1)
        os.replace(tmp, rec)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return rec


class _Prepared(torch.utils.data.Dataset):
    """Item ``k``: ``(k, encoder input [3, S, S] or None, the exception or None)``; runs in workers."""

    def __init__(self, paths: list[str], size: int, background: float, foreground_ratio: float,
                 mode: str = "default", remove_background: str = "auto"):
        self.paths, self.size, self.background, self.ratio = paths, size, background, foreground_ratio
        self.mode, self.remove_background = mode, remove_background

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, k: int):
        try:
            return k, prepare_image(self.paths[k], self.size, self.background, self.ratio, self.mode,
                                    self.remove_background), None
        except Exception as e:  # noqa: BLE001 - reported per file by the main process
            msg = str(e) if self.paths[k] in str(e) else f"{self.paths[k]}: {e}"
            return k, None, (type(e).__name__, msg)


def _as_list(batch):
    return batch


@dataclass
class BatchSummary:
    """What ``reconstruct_many`` did in this process (``rank`` of ``world``)."""

    total: int = 0                                        # inputs this process was given (its shard)
    done: list[str] = field(default_factory=list)         # inputs reconstructed now
    skipped: list[str] = field(default_factory=list)      # inputs already complete
    failed: list[tuple[str, str]] = field(default_factory=list)   # (input, one-line reason)
    written: list[str] = field(default_factory=list)      # files written
    seconds: float = 0.0                                  # wall time of the loop (model already loaded)
    rank: int = 0
    world: int = 1

    @property
    def images_per_s(self) -> float:
        return len(self.done) / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def line(self) -> str:
        who = f"rank {self.rank}/{self.world}: " if self.world > 1 else ""
        return (f"{who}done {len(self.done)}, skipped {len(self.skipped)}, failed {len(self.failed)} of "
                f"{self.total} images in {self.seconds:.1f} s ({self.images_per_s:.2f} images/s)")


def _error(kind_msg):
    kind, msg = kind_msg
    return FileNotFoundError(msg) if kind == "FileNotFoundError" else ValueError(msg)


def reconstruct_many(model: LRM, inputs, out_dir: str = "outputs", formats=("glb", "mp4"), *,
                     batch_size: int = 1, workers: int | None = None, overwrite: bool = False,
                     n_views: int = 24, resolution: int = 96, elevation: float = 15.0,
                     mc_resolution: int | None = None, threshold: float | None = None,
                     coarse_to_fine: bool = True, watertight: bool = False, fps: int = 12, texture: bool = False,
                     texture_size: int = 1024, faces: int | None = None, model_name: str | None = None,
                     remove_background: str = "auto", preprocess: bool | str = True,
                     rank: int | None = None, world: int | None = None, stop_on_error: bool = False,
                     verbose: bool = True, progress: bool = False, max_memory=None) -> BatchSummary:
    """Reconstruct every input image into ``out_dir/<stem>/`` (see the module docstring).

    Args:
        inputs: an image file, a folder, a ``.txt`` list, or a list of those (``list_inputs``).
        formats: any of ``lrm_fast.io.export.EXPORTERS`` (``Reconstruction.save``): ``glb obj ply mp4 gif
            png triplane``.
        texture, texture_size, faces: a textured GLB/OBJ (``Reconstruction.save(texture=True)``).
        watertight: meshes closed by the box's faces where the object reaches it (``Reconstruction.mesh``).
        remove_background: how opaque photos are cut out (``auto | rembg | builtin | none``; see
            ``lrm_fast.reconstruct``); images with a real alpha channel are used as is.
        preprocess: how each file becomes the encoder input (``lrm_fast.reconstruct``'s; default the
            model family's own).
        batch_size: images per encoder/decoder call.
        workers: processes that decode and preprocess images (default: 2, or 0 for a single image).
        overwrite: redo inputs whose outputs are already complete (default: skip them).
        rank, world: this process's shard (default: torchrun's ``RANK`` / ``WORLD_SIZE``).
        stop_on_error: raise the first error instead of reporting it and going on.
        verbose: one line per image on stdout; failures always go to stderr.
        max_memory: the working memory of each render and mesh (bytes or ``"4GB"``; None: a share of the
            device's free memory; ``Reconstruction.save``). Outputs do not depend on it.
    Returns a ``BatchSummary``; ``summary.ok`` is False when any input failed.
    """
    formats = check_formats(formats, texture=texture)
    check_max_memory(max_memory)
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    paths = list_inputs(inputs)
    names = output_names(paths)
    env_rank, env_world, _ = dist_info()
    rank = env_rank if rank is None else int(rank)
    world = env_world if world is None else int(world)
    mine = shard(len(paths), rank, world)
    settings = {"model": model_name or model.cfg.name, "formats": sorted(formats), "n_views": int(n_views),
                "resolution": int(resolution), "elevation": float(elevation), "mc_resolution": mc_resolution,
                "threshold": threshold, "coarse_to_fine": bool(coarse_to_fine), "fps": int(fps),
                "watertight": bool(watertight),
                "texture": bool(texture), "texture_size": int(texture_size) if texture else None,
                "faces": faces, "remove_background": resolve_method(remove_background),
                "preprocess": preprocess_mode(model, preprocess),
                "dtype": ("int8" if hasattr(model, "int8_engine")  # model/quant.py: fp32 params, int8 Linears
                          else str(next(model.parameters()).dtype).replace("torch.", "")),
                "skip_empty": bool(getattr(model.cfg.render, "skip_empty", False))}
    summary = BatchSummary(total=len(mine), rank=rank, world=world)
    prefix = f"[rank {rank}/{world}] " if world > 1 else ""
    todo = []
    for i in mine:
        if not overwrite and os.path.exists(paths[i]) and is_done(paths[i], out_dir, names[i], settings):
            summary.skipped.append(paths[i])
            if verbose:
                print(f"{prefix}skip {paths[i]}: outputs complete in {os.path.join(out_dir, names[i])} "
                      "(--overwrite redoes it)")
        else:
            todo.append(i)
    t0 = time.perf_counter()
    if todo:
        size, bg, ratio = input_spec(model)
        n_workers = (2 if len(todo) > 1 else 0) if workers is None else max(0, int(workers))
        loader = torch.utils.data.DataLoader(
            _Prepared([paths[i] for i in todo], size, bg, ratio if preprocess is not False else 0.0,
                      preprocess_mode(model, preprocess), remove_background), batch_size=int(batch_size),
            shuffle=False,
            num_workers=n_workers, collate_fn=_as_list, persistent_workers=False)

        def fail(i: int, err: tuple[str, str]) -> None:
            if stop_on_error:
                raise _error(err)
            summary.failed.append((paths[i], err[1]))
            print(f"{prefix}FAILED {err[1]}", file=sys.stderr)

        for batch in loader:
            good = []
            for k, x, err in batch:
                if err is None:
                    good.append((todo[k], x))
                else:
                    fail(todo[k], err)
            if not good:
                continue
            t_item = time.perf_counter()
            try:
                rec = reconstruct_prepared(model, torch.stack([x for _, x in good]))
            except Exception as e:  # noqa: BLE001 - the whole batch failed (e.g. out of memory)
                if stop_on_error:
                    raise
                for i, _ in good:
                    fail(i, (type(e).__name__, f"{paths[i]}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"))
                continue
            for b, (i, _) in enumerate(good):
                name, item_dir = names[i], os.path.join(out_dir, names[i])
                try:
                    one = Reconstruction(model, rec.triplane[b:b + 1], rec.inputs[b:b + 1])
                    files = one.save(item_dir, formats=formats, n_views=n_views, resolution=resolution,
                                     mc_resolution=mc_resolution, threshold=threshold, names=[name],
                                     elevation=elevation, fps=fps, coarse_to_fine=coarse_to_fine,
                                     watertight=watertight,
                                     progress=progress, texture=texture, texture_size=texture_size,
                                     faces=faces, model_name=settings["model"], max_memory=max_memory)
                    _write_record(paths[i], out_dir, name, settings, files)
                except Exception as e:  # noqa: BLE001 - one image's outputs failed; the run goes on
                    if stop_on_error:
                        raise
                    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
                    fail(i, (type(e).__name__, msg if paths[i] in msg else f"{paths[i]}: {msg}"))
                    continue
                summary.done.append(paths[i])
                summary.written += files
                if verbose:
                    n = len(summary.done) + len(summary.failed) + len(summary.skipped)
                    shown = ", ".join(os.path.basename(f) for f in files if "_view" not in f)
                    print(f"{prefix}[{n}/{len(mine)}] {paths[i]} -> {item_dir}: {shown} "
                          f"({time.perf_counter() - t_item:.1f} s)")
                t_item = time.perf_counter()
    summary.seconds = time.perf_counter() - t0
    return summary
