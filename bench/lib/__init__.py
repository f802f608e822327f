"""Library code of the benchmarks: the report's parsing, tables, gate and README section, peak memory,
the fitted field, the skipping fields and the roofline byte/FLOP model."""
