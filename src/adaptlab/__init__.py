"""adaptlab: adapt pre-trained models to new domains.

Importing this package is light (no torch); heavy parts load when a run starts.
"""

__version__ = "0.1.0"
