"""The benchmark's plain baselines (see benchmark.py): servers and clients written for it alone."""
