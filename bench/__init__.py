"""Benchmarks for RBOT Arena: every figure is a ratio to a baseline measured in the same run.

Run with ``bash bench/run.sh`` (see ``bench/README.md``).
"""
