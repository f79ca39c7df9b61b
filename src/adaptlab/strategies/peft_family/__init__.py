"""The peft family: one module per method (after peft's one folder per tuner), a shared base.

Each method module registers one strategy; :mod:`.base` holds what they share (targets from
the layer map filtered by the layer types the method supports, the head and BatchNorm layers
saved whole, the adapter saved with ``save_pretrained``, merging through peft).
"""
