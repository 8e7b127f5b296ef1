"""The package version, in a leaf module (what caches and files record without importing the
whole package)."""

__version__ = "0.1.0"
