"""Benchmarks behind `unlearnx bench`: ops (fused vs composite), methods (end to end)."""
