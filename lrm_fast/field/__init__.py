"""The triplane field and what is derived from it alone, shared by rendering and meshing.

* ``triplane.py``: ``TriplaneField`` (planes + points -> raw outputs; its rgb and density activations);
* ``activations.py``: the one table of the field's activations (names, kernel codes, constants),
  at the ops layer (the ops' twins apply it; ``tests/test_activations.py`` holds the kernels to it);
* ``occupancy.py``: the occupancy grid (``OccupancyGrid``, ``build_occupancy``, ``raw_cut``), the
  per-cell bound of the raw density that the renderer's empty-space skipping reads;
* ``bounds.py``: ``field_density_bounds``, proven bounds of the density over boxes (the occupancy
  grid's pre-pass and meshing's coarse-to-fine grid).

This ``__init__`` imports nothing, so the ops layer may import ``activations.py`` without pulling in
the rest of the package (``docs/architecture.md`` section 2).
"""
