"""Benchmarks behind `pinstream bench`: each measures our path beside the bare library's ceiling."""
