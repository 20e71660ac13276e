"""Benchmarks behind `mrhash bench`; their recorded output lives in docs/BENCHMARKS.md."""
