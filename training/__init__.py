"""Byte-level BPE, token shards, the GPT-2 model and its DDP training loop (issues 6, 7)."""
