"""The web demo behind ``lrm-fast demo``: a gradio page over the public API (needs the ``demo`` extra).

Upload a photo -> ``load_model`` (cached) -> ``model.reconstruct`` -> ``rec.save`` (turntable mp4,
then GLB + OBJ from one mesh) -> the page shows the preprocessed input, the video, an interactive 3D
view of the GLB (``gr.Model3D``) and download buttons. Nothing here computes anything the CLI does
not: it is the same three API calls with the page's settings.

* Errors the user can fix (not an image, too small, unknown model folder, bad mesh resolution) are
  the API's own one-line messages (the ones ``lrm-fast reconstruct`` prints after ``error:``), shown
  on the page as ``gr.Error`` and returned to ``gradio_client`` callers as their error message. The
  upload's temporary path is shortened to its file name.
* The upload is a ``gr.File``, not a ``gr.Image``: gradio would decode (and re-encode) an image
  itself first, so a bad file would get gradio's error instead of ours, and RGBA / 16-bit
  details would be lost.
* API: the endpoint is ``/reconstruct`` (``API_NAME``); ``Client(url).predict(handle_file(path),
  model, mc_resolution, views[, remove_bg], api_name="/reconstruct")`` returns (input png, video, glb,
  glb, obj, mp4, status markdown); ``remove_bg`` (the checkbox) defaults to True.
* Background: an opaque photo is cut out first (``lrm_fast.remove_background``, the *Remove the
  background* checkbox, on by default); the preprocessed input shows the cut-out. A photo with an
  alpha channel is used as is.
* Models: on a loopback host (the default 127.0.0.1) the *Model* box opens any preset or checkpoint
  path, as the CLI does. Served to the network (``--host 0.0.0.0``) or with ``--models DIR``, the page
  opens only the model it was started with and checkpoints under the ``--models`` folders (names
  relative to them); anything else (other paths, presets) is refused in one line that shows no server
  path, so a visitor cannot make the server read other files.
* Requests run one at a time (a queue of concurrency 1): a model uses all CPU threads or the GPU.
* Outputs go to a private temporary folder (the last ``KEEP_RUNS`` runs are kept; removed at exit);
  gradio copies what it serves into its own cache, which it clears after an hour.
"""
from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
import threading
import time

import gradio as gr
import trimesh

from .api import DEFAULT_MODEL, load_model
from .io.background import remove_background, resolve_method
from .io.export import check_formats, save_image
from .io.images import has_foreground_alpha, load_image

API_NAME = "reconstruct"
# What the page writes and offers for download: names in the output-format registry (io/export.py),
# checked there at import; the download buttons (dl-glb, dl-obj, dl-mp4) are made from them.
VIDEO_FORMATS = check_formats("mp4", kinds=("video",))
MESH_FORMATS = check_formats("glb,obj", kinds=("mesh",))
KEEP_RUNS = 8
# Errors the user can fix: the same classes the CLI turns into one line (lrm_fast/cli.py).
USER_ERRORS = (ValueError, FileNotFoundError, RuntimeError, KeyError)
OPAQUE_NOTE = ("Background removal is off: this photo has no transparent background, so it is used as is. "
               "A PNG with an alpha channel around the object works best.")
CUT_NOTE = ("This photo has no transparent background: it was cut out with the {method} method (see the "
            "preprocessed input). If the cut is wrong, upload a PNG with an alpha channel around the object.")


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def _one_line(e: BaseException, path: str | None) -> str:
    """The exception's message on one line, with the upload's temporary path replaced by its file name."""
    msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    if path:
        msg = msg.replace(path, os.path.basename(path))
    return " ".join(msg.split())


def _stem(path: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.splitext(os.path.basename(path))[0]).strip("._")
    return s or "object"


class Demo:
    """The page's state: options, one cached model, the output folder. ``run`` is the endpoint."""

    def __init__(self, model: str = DEFAULT_MODEL, device: str = "auto", dtype: str = "auto",
                 backend: str = "auto", mc_resolution: int | None = None, views: int = 24,
                 resolution: int = 96, elevation: float = 15.0, out_root: str | None = None,
                 models: list[str] | None = None, restricted: bool | None = None):
        """``models``: folders whose checkpoints the page may open; ``restricted`` (default: when
        ``models`` is given) limits the *Model* box to ``model`` and checkpoints under ``models``."""
        self.default_model = model
        self.model_dirs = [os.path.realpath(d) for d in (models or [])]
        for d in self.model_dirs:
            if not os.path.isdir(d):
                raise FileNotFoundError(f"--models {d}: not a folder")
        self.restricted = bool(self.model_dirs) if restricted is None else bool(restricted)
        self.device, self.dtype, self.backend = device, dtype, backend
        self.views, self.resolution, self.elevation = int(views), int(resolution), float(elevation)
        self._lock = threading.Lock()
        self._cached: tuple[str, object] | None = None
        if out_root is None:
            out_root = tempfile.mkdtemp(prefix="lrm-fast-demo-")
            atexit.register(shutil.rmtree, out_root, True)
        self.out_root = out_root
        self._runs: list[str] = []
        # load the default model now, always: a bad --model fails at start, and the first request does
        # not pay for it (on a loaded 2-core machine a first load took 100 s inside a request)
        default_mc = self.model(model).cfg.render.mesh_resolution
        self.mc_resolution = int(mc_resolution or default_mc)

    def model(self, name: str):
        """The loaded model for ``name`` (one model kept; switching folders reloads)."""
        name = self.allowed_model((name or "").strip() or self.default_model)
        with self._lock:
            if self._cached is None or self._cached[0] != name:
                self._cached = None  # free the old one before loading the next
                self._cached = (name, load_model(name, device=self.device, dtype=self.dtype, backend=self.backend))
            return self._cached[1]

    def allowed_model(self, name: str) -> str:
        """``name`` itself, or (restricted) the checkpoint it names under a ``--models`` folder; a
        name outside them is refused with a one-line ``ValueError`` (whether or not it exists)."""
        if not self.restricted or name == self.default_model:
            return name
        for d in self.model_dirs:
            p = os.path.realpath(os.path.join(d, name))
            if p != d and p.startswith(d + os.sep) and os.path.exists(p):
                return p
        where = "checkpoints in its --models folders (by name)" if self.model_dirs else \
            "no other (start it with --models DIR to allow the checkpoints in DIR)"
        raise ValueError(f"model {name!r} is not allowed on this server: it opens {self.default_model!r} and {where}")

    def _new_run_dir(self) -> str:
        d = tempfile.mkdtemp(prefix="run-", dir=self.out_root)
        self._runs.append(d)
        while len(self._runs) > KEEP_RUNS:
            shutil.rmtree(self._runs.pop(0), ignore_errors=True)
        return d

    def run(self, photo, model_name, mc_resolution, views, remove_bg=True, progress=gr.Progress(track_tqdm=True)):
        """photo (path) -> (input png, mp4, glb for the 3D view, glb, obj, mp4 downloads, status markdown).
        ``remove_bg``: cut an opaque photo's background out first (``lrm_fast.remove_background``)."""
        path = photo if isinstance(photo, str) or photo is None else getattr(photo, "path", None) or str(photo)
        if not path:
            raise gr.Error("no photo: upload an image file first", duration=None, print_exception=False)
        try:
            return self._run(path, model_name, mc_resolution, views, remove_bg, progress)
        except USER_ERRORS as e:
            raise gr.Error(_one_line(e, path), duration=None, print_exception=False) from None

    def _run(self, path, model_name, mc_resolution, views, remove_bg, progress):
        t0 = time.perf_counter()
        progress(0.0, desc="loading the model")
        name = (model_name or "").strip() or self.default_model
        model = self.model(name)
        try:
            mc = int(mc_resolution) if mc_resolution not in (None, "") else self.mc_resolution
            n_views = int(views) if views not in (None, "") else self.views
        except (TypeError, ValueError):
            raise ValueError(f"mesh resolution and turntable frames must be whole numbers, got "
                             f"{mc_resolution!r} and {views!r}") from None
        if not 8 <= mc <= 1024:
            raise ValueError(f"mesh resolution must be in [8, 1024], got {mc}")
        if not 1 <= n_views <= 360:
            raise ValueError(f"turntable frames must be in [1, 360], got {n_views}")
        progress(0.05, desc="reading the photo")
        rgba = load_image(path)  # the CLI's checks and messages, before any model work
        notes = []
        if not has_foreground_alpha(rgba):
            if remove_bg in (None, True) or str(remove_bg).lower() == "true":
                progress(0.07, desc="removing the background")
                method = resolve_method("auto")
                rgba = remove_background(rgba, method)
                notes.append(CUT_NOTE.format(method=method))
            else:
                notes.append(OPAQUE_NOTE)
        if getattr(model, "untrained", False):
            notes.append(f"**`{name}` is a preset with random, untrained weights**: the output shows that the "
                         "pipeline works, not a real reconstruction.")
        progress(0.1, desc="image -> triplane")
        rec = model.reconstruct(rgba, remove_background="none")  # the (cut-out) image loaded above
        out = self._new_run_dir()
        stem = _stem(path)
        input_png = save_image(rec.inputs[0].permute(1, 2, 0), os.path.join(out, stem + "_input.png"))
        progress(0.3, desc="rendering the turntable")
        (video,) = rec.save(out, formats=VIDEO_FORMATS, n_views=n_views, resolution=self.resolution,
                            elevation=self.elevation, names=[stem], progress=True)
        progress(0.6, desc="extracting the mesh")
        meshes = rec.save(out, formats=MESH_FORMATS, mc_resolution=mc, names=[stem], progress=True)
        progress(1.0, desc="done")
        glb = meshes[0]  # the 3D view shows the first (glb)
        mesh = trimesh.load(glb, force="mesh")
        status = (f"Reconstructed **{os.path.basename(path)}** with `{name}` in "
                  f"{time.perf_counter() - t0:.1f} s: mesh {len(mesh.vertices)} vertices / {len(mesh.faces)} "
                  f"faces (marching cubes {mc}^3), turntable {n_views} frames at {self.resolution} px.")
        return (input_png, video, glb, *meshes, video, "\n\n".join([status] + notes))


def build_app(demo: Demo) -> gr.Blocks:
    """The page. Element ids (``photo``, ``run``, ``input``, ``video``, ``mesh3d``, ``dl-glb``,
    ``dl-obj``, ``dl-mp4``, ``status``) are what the browser test finds."""
    with gr.Blocks(title="lrm_fast demo", analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown("## lrm_fast: one photo -> 3D\nUpload a photo of one object. A PNG with a transparent "
                    "background works best; an opaque photo gets its background cut out first. With the shipped demo model "
                    "(trained on a CPU on synthetic shapes) expect blurry blobs in the right place and "
                    "size; point *Model* at an OpenLRM or TripoSR checkpoint folder for real photos.")
        with gr.Row():
            with gr.Column(scale=1):
                photo = gr.File(label="Photo (PNG with alpha works best)", type="filepath", elem_id="photo")
                model = gr.Textbox(value=demo.default_model, label="Model: checkpoint folder or preset name",
                                   elem_id="model")
                mc = gr.Slider(8, 512, value=demo.mc_resolution, step=1, elem_id="mc",
                               label="Mesh resolution (marching-cubes points per axis)")
                views = gr.Slider(1, 72, value=demo.views, step=1, label="Turntable frames", elem_id="views")
                remove_bg = gr.Checkbox(value=True, label="Remove the background of an opaque photo",
                                        elem_id="remove-bg")
                button = gr.Button("Reconstruct", variant="primary", elem_id="run")
                status = gr.Markdown(label="status", elem_id="status")
            with gr.Column(scale=1):
                inp = gr.Image(label="Preprocessed input (what the encoder sees: the cut-out object)", type="filepath",
                               interactive=False, elem_id="input", height=256)
                video = gr.Video(label="Turntable", interactive=False, autoplay=True, loop=True,
                                 elem_id="video", height=256)
            with gr.Column(scale=1):
                view3d = gr.Model3D(label="Mesh (drag to turn, scroll to zoom)", elem_id="mesh3d", height=320)
                with gr.Row():
                    downloads = [gr.DownloadButton(f.upper(), elem_id=f"dl-{f}", size="sm", min_width=60)
                                 for f in MESH_FORMATS + VIDEO_FORMATS]
        button.click(demo.run, [photo, model, mc, views, remove_bg], [inp, video, view3d, *downloads, status],
                     api_name=API_NAME)
    return app


def launch(demo: Demo, host: str = "127.0.0.1", port: int = 7860, block: bool = True):
    """Serve the page on ``host:port`` (one request at a time). Returns gradio's (app, local url, share url)."""
    app = build_app(demo)
    app.queue(default_concurrency_limit=1)
    return app.launch(server_name=host, server_port=int(port), show_error=True, share=False,
                      prevent_thread_lock=not block, footer_links=["api"])
