"""Offline acceptance evaluation: speculative decoding of verifier + draft with greedy verification,
and a cost model turning acceptance into an expected speed-up."""
