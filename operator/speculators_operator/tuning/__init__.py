"""Automatic k: the throughput model and the choice of k, pure functions (status.tuning wires them)."""
