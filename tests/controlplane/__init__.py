"""Proof that the test control plane is real: apiserver validation, controllers, scheduler, storage."""
