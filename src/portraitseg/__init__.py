"""portraitseg: real-time portrait segmentation (person vs background)."""

__version__ = "0.1.0"
