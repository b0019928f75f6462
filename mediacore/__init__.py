"""mediacore: a live-streaming engine for live commerce."""

__version__ = "0.1.0"
