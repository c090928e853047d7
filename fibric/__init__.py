"""Fibric: a declarative control plane for governed AI operators."""

__version__ = "0.1.0"
