"""`make bench` / `python -m benchmarks`: each `bench_*.py` runs its baseline in the same run and
prints ratios against it."""
