"""The triplane field and what is derived from it alone, shared by rendering and meshing.

* ``triplane.py``: ``TriplaneField`` (planes + points -> raw outputs; its rgb and density activations);
* ``occupancy.py``: the occupancy grid (``OccupancyGrid``, ``build_occupancy``, ``raw_cut``), the
  per-cell bound of the raw density that the renderer's empty-space skipping reads;
* ``bounds.py``: ``field_density_bounds``, proven bounds of the density over boxes (the occupancy
  grid's pre-pass and meshing's coarse-to-fine grid).

This ``__init__`` imports nothing, so a low layer may import one of the package's low modules
without pulling in the rest (``docs/architecture.md`` section 2).
"""
