"""Benchmark scripts (not part of the installed library); results in benchmarks/RESULTS.md."""
