"""Prompt strategies: learnable or generated tokens in a frozen backbone's token sequence.

- :mod:`.insertion`: where a backbone family's token sequence can take tokens (timm ViTs,
  Hugging Face BERT-style encoders, our point transformer), and the hooks that insert,
  replace and remove them;
- :mod:`.base`: the lifecycle the three strategies share (frozen backbone, refusals,
  prompts off for the unadapted model, nothing to merge);
- :mod:`.vpt`, :mod:`.dvpt`, :mod:`.idpt`: one registered strategy each.

Each strategy module registers itself when the registry imports it; this package imports
none of them, so asking for one strategy loads only its module.
"""
