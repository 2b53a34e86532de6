"""Data preparation (chat template, loss masks, token frequencies), hidden-state shards and datagen."""
