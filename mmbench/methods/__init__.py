"""The fusion zoo. ``create(name, dims, out_dim, **hp)`` builds one; ``available()`` lists them."""
from mmbench.methods.registry import MethodInfo, available, create, info, register_method

# Importing the family modules registers their methods.
from mmbench.methods import (  # noqa: E402,F401
    attention, basic, bilinear, coordinated, encdec, joint, tensor, transformer, view_specific)

__all__ = ["MethodInfo", "available", "create", "info", "register_method"]
