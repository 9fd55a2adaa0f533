"""The fbnas version, in a module of its own: library code records it without importing the
root package (which only the CLI may import)."""

__version__ = "0.1.0"
