"""``lrm-fast demo``: the web demo (gradio) on http://127.0.0.1:7860; the page lives in ``lrm_fast/web.py``.

gradio is an optional extra (``pip install --no-build-isolation -e ".[demo]"``); without it this
command ends with a one-line error that says how to install it. ``lrm-fast --help`` never imports gradio.
"""
from __future__ import annotations

import importlib.util
import signal
import sys


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def add_arguments(p):
    from ..api import DEFAULT_MODEL

    p.description = ("Start the web demo: upload a photo in the browser, see the preprocessed input, the "
                     "turntable video and an interactive 3D view of the mesh, download GLB/OBJ/MP4. "
                     "Binds 127.0.0.1 (this machine only) unless --host says otherwise. Needs the demo "
                     "extra: pip install --no-build-isolation -e \".[demo]\".")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"model loaded at start and shown on the page (preset name or checkpoint folder); "
                        f"default: {DEFAULT_MODEL}")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 serves every network interface: "
                        "anyone who can reach it can run models, so then the page opens only --model and "
                        "checkpoints under --models)")
    p.add_argument("--models", action="append", default=None, metavar="DIR",
                   help="a folder of checkpoints the page may open (names relative to it; repeatable). Given, "
                        "or with a --host that is not loopback, the page opens only --model and these")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--mc-resolution", type=int, default=None,
                   help="initial mesh resolution on the page (default: the model's)")
    p.add_argument("--views", type=int, default=24, help="initial turntable frames on the page (default 24)")
    p.add_argument("--resolution", type=int, default=96, help="turntable resolution in pixels (default 96)")
    p.add_argument("--device", default="auto", help="auto (GPU if visible), cpu, cuda, cuda:1 ...")
    p.add_argument("--dtype", default="auto", help="auto (bf16 on GPU; fp32 on CPU, or int8 where "
                   "`lrm-fast info` says it pays), int8 (CPU), fp32, bf16, fp16")
    p.add_argument("--backend", default="auto", help="auto | fast | reference (see `lrm-fast info`)")


def run(args) -> int:
    if importlib.util.find_spec("gradio") is None:
        raise RuntimeError('the web demo needs gradio: pip install --no-build-isolation -e ".[demo]" '
                           '(or pip install "gradio>=6.31,<7")')
    from ..web import Demo, is_loopback, launch

    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port must be in [1, 65535], got {args.port}")
    if args.resolution < 8 or args.views < 1:
        raise ValueError(f"--resolution must be >= 8 and --views >= 1, got {args.resolution} and {args.views}")
    demo = Demo(args.model, device=args.device, dtype=args.dtype, backend=args.backend,
                mc_resolution=args.mc_resolution, views=args.views, resolution=args.resolution,
                models=args.models, restricted=bool(args.models) or not is_loopback(args.host))
    allow = "" if not demo.restricted else \
        f"; models allowed: {args.model}" + "".join(f", {d}/*" for d in demo.model_dirs)
    print(f"lrm-fast demo: model {args.model}, serving http://{args.host}:{args.port}{allow} (Ctrl+C stops)",
          file=sys.stderr, flush=True)
    # `kill` / a test's terminate() ends the server like Ctrl+C, so atexit removes its output folder
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        launch(demo, host=args.host, port=args.port)
    except OSError as e:  # port taken, address not available
        raise RuntimeError(f"cannot serve on {args.host}:{args.port} ({' '.join(str(e).split())}); "
                           "choose another --port") from None
    return 0
