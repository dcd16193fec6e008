"""Benchmarks run by `make bench` (`python -m bench [--only NAME]`); results go to bench/results/."""
