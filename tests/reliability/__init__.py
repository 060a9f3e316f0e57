"""Reliability under faults, bad input and load: crash cycles, a malformed-input corpus, mixed load.

The modules other than ``test_*`` hold the drivers; `bench/reliability_bench.py` runs them longer.
"""
