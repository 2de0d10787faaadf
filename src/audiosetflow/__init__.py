"""audiosetflow: AudioSet metadata to Parquet features to per-label sound classifiers."""

__version__ = "0.1.0"
