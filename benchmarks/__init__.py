"""Benchmark harness for predjoin: data generator, peer scripts, checker and runner.

See ``benchmarks/README.md``.
"""
