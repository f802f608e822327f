"""The pytest-benchmark suites (``bench_*.py``; ``conftest.py`` holds their conventions): collected by
``python -m pytest`` (pytest.ini testpaths) and run timed by ``python -m bench.report``."""
