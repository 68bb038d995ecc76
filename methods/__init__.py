"""PEFT methods, one file each, found by name through :mod:`methods.registry`."""
from peftbench.methods.registry import available, get, register

__all__ = ["available", "get", "register"]
