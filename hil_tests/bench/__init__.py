"""Benchmarks: run by `make bench`, not collected by pytest; they write their results to docs/."""
