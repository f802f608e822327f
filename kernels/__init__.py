"""Triton kernels, installed as ``lrm_fast.kernels`` (setup.py ``package_dir``). Import lazily:
importing triton costs seconds and needs ``TRITON_INTERPRET=1`` on machines without a GPU."""
