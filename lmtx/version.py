"""The package version (written in run folders)."""

__version__ = "0.1.0"
