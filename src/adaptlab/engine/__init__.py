"""The training engine: a loop we own on top of Accelerate, with events and checkpoints."""
