"""EAGLE-3 training in the shape of torchtitan: model, data, optimizer, checkpoint and loop as separate parts.

config.py       TrainConfig (every flag of `speculators train`)
distributed.py  rendezvous from the environment (torchrun / Indexed Job), DDP or FSDP2 wrapping
vocab.py        draft vocabulary: d2t/t2d from token frequencies
model.py        the draft model built for a verifier (speculators_core.models.Eagle3DraftModel)
batches.py      packing plan (deterministic per seed and epoch) and batch assembly, offline or online
losses.py       forward KL / CE against the verifier restricted to the draft vocabulary (chunked, fused grad)
ttt.py          train-time-test step: unroll, per-step alignment, loss and accuracy metrics
optim.py        AdamW with warm-up and cosine/linear decay
checkpoint.py   atomic checkpoints with optimizer, scheduler, RNG and data position; resume
loop.py         the trainer
"""
