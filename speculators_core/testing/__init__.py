"""Tiny tokenizer, verifier and corpus builders shared by tests and benchmarks (real, trained locally)."""
