"""Token selection: the public API, the method registry and the methods themselves.

Importing this package registers every built-in method.
"""
from evtp.selection.registry import METHODS, MethodSpec, register_method
from evtp.selection.api import CoverageTarget, kept_counts, resolve_keep, select_tokens
from evtp.selection import methods as _methods  # noqa: F401  (registers the built-in methods)

__all__ = ["METHODS", "MethodSpec", "register_method", "CoverageTarget", "kept_counts",
           "resolve_keep", "select_tokens"]
