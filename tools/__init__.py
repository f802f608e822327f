"""Developer tools of the repository (not installed): the parity generators, kernel checks, scripts."""
