"""Benchmark scripts (README.md): a package so that tests can import benchmarks.measure."""
