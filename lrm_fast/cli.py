"""``lrm-fast`` command line. Each subcommand lives in ``lrm_fast/commands/<name>.py`` with
``add_arguments(parser)`` and ``run(args) -> int``, listed in ``COMMANDS``. Building the parser
imports every command module (for its arguments), and with it ``lrm_fast`` and torch; most
commands import their own work inside ``run`` (eval and pictures take theirs from
``lrm_fast/train`` at import). Errors the user can fix (bad file, bad shape, unknown
preset) end with one line on stderr and exit code 2, never a traceback (``LRM_FAST_DEBUG=1`` shows it).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMANDS = {
    "reconstruct": ("lrm_fast.commands.reconstruct", "photo(s) -> colored mesh (glb) + turntable video (mp4)"),
    "render": ("lrm_fast.commands.render", "render views of a saved reconstruction (triplane file)"),
    "convert": ("lrm_fast.commands.convert", "convert an OpenLRM / TripoSR checkpoint to ours"),
    "info": ("lrm_fast.commands.info", "versions, devices, presets with parameter counts, kernel paths"),
    "make-data": ("lrm_fast.commands.make_data", "generate the synthetic multi-view dataset"),
    "train": ("lrm_fast.commands.train", "train or fine-tune a model"),
    "bench": ("lrm_fast.commands.bench", "run the benchmarks and print fast/reference ratios"),
    "eval": ("lrm_fast.commands.eval", "held-out PSNR / IoU of a model next to the white and sphere baselines"),
    "pictures": ("lrm_fast.commands.pictures", "input, novel views vs truth and mesh for the sample + held-out objects"),
    "demo": ("lrm_fast.commands.demo", "web demo in the browser (gradio; the [demo] extra)"),
}
# Commands that hand every argument as given to the program they run (their module's ``run_argv``):
# ``bench`` runs ``python -m bench.report`` of a source checkout.
PASS_THROUGH = ("bench",)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lrm-fast",
        description="Fast single-image 3D reconstruction (LRM). Give it a photo of an object, get a "
                    "triplane NeRF, novel views, a turntable video and a colored mesh.",
        epilog="Start with `lrm-fast reconstruct` (the shipped sample image) or "
               "`lrm-fast reconstruct photo.png --model CHECKPOINT`; `lrm-fast COMMAND --help` explains each command.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help) in COMMANDS.items():
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in PASS_THROUGH:
        args = argparse.Namespace(command=argv[0], _module=COMMANDS[argv[0]][0], argv=argv[1:])
    else:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 0
    try:
        module = importlib.import_module(args._module)
        return int((module.run_argv(args.argv) if args.command in PASS_THROUGH else module.run(args)) or 0)
    except (ValueError, FileNotFoundError, RuntimeError, KeyError) as e:
        if os.environ.get("LRM_FAST_DEBUG"):
            raise
        print(f"lrm-fast {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
