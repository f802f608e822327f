"""``lrm-fast bench``: run the benchmark suites and print fast/reference ratios (``bench/report.py``).

The suites live in the source tree's ``bench/`` folder, which is not installed with the package, so
this command runs ``python -m bench.report ARGS`` of a source checkout in a child process: the
checkout this package was installed from (``pip install -e .``), else the current folder. Every
argument goes to ``bench.report`` as given (``lrm-fast bench --help`` prints its options); outside a
checkout it ends in one line saying to run it from the repository.
"""
from __future__ import annotations

import os
import subprocess
import sys

REPORT = "bench.report"  # the module run, in the checkout


def checkout() -> str | None:
    """The source checkout to run the benchmarks of (a folder holding ``bench/report.py`` and
    ``lrm_fast/``): the one this package lives in (an editable install), else the current folder."""
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for root in (here, os.getcwd()):
        if os.path.isfile(os.path.join(root, *REPORT.split(".")) + ".py") and os.path.isdir(os.path.join(root, "lrm_fast")):
            return root
    return None


def add_arguments(p):
    p.description = ("Run the benchmark suites of a source checkout (bench/, not installed with the package) and "
                     f"print fast/reference ratios: `python -m {REPORT} ARGS` in the checkout this package was "
                     "installed from (pip install -e .) or the current folder. Every argument is passed on; "
                     "`lrm-fast bench --help` prints them.")
    p.add_argument("argv", nargs="*", help=f"arguments of python -m {REPORT}")


def run_argv(argv: list[str]) -> int:
    """Run ``python -m bench.report *argv`` from the checkout (the user's folder stays the working
    folder, so relative paths mean what they meant); its exit code."""
    root = checkout()
    if root is None:
        raise FileNotFoundError(f"lrm-fast bench runs the benchmarks of a source checkout (bench/ is not part of the "
                                f"installed package); none here: run it from the repository, or "
                                f"`python -m {REPORT}` there")
    env = dict(os.environ, PYTHONPATH=root + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else ""),
               PYTHONSAFEPATH="1")  # 3.11+: the checkout's bench/, not a bench/ in the current folder
    sys.stdout.flush()
    sys.stderr.flush()
    return subprocess.run([sys.executable, "-m", REPORT, *argv], env=env).returncode


def run(args) -> int:
    return run_argv(list(args.argv))
