"""``lrm-fast bench``: run the benchmark suites and print fast/reference ratios (``bench/report.py``).

The suites live in the source tree's ``bench/`` folder (they are not part of the installed
package), so this command needs a source checkout: the editable install (``pip install -e .``)
finds it next to the package. All options are ``python -m bench.report``'s.
"""
from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _report():
    if not os.path.isfile(os.path.join(ROOT, "bench", "report.py")):
        raise FileNotFoundError(f"lrm-fast bench needs a source checkout with bench/report.py; looked in {ROOT} "
                                "(install with `pip install -e .` from the repository)")
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from bench import report

    return report


def add_arguments(p):
    try:
        _report().build_parser(p)
    except FileNotFoundError:  # keep `lrm-fast --help` working from a non-editable install
        p.add_argument("rest", nargs="*", help="(bench/ not found: needs a source checkout)")


def run(args) -> int:
    return _report().run(args)
