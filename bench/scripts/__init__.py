"""Runnable measurements (``python -m bench.scripts.<name>``) and the GPU suite's shell scripts."""
