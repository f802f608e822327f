"""The parity generators (run as scripts; ``_common`` is also imported as ``tools.parity._common``)."""
