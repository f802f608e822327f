"""The package version: the one place it is written (``lrm_fast.__version__``, setup.py, ``lrm-fast info``).

setup.py reads this line with a regular expression, so keep it a plain string literal."""
__version__ = "0.2.0"
