"""Tests of the benchmarks' shared measuring module."""
