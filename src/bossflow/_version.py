"""The version of bossflow, importable from every layer without loading the public API."""

__version__ = "0.1.0"
