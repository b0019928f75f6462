"""Chooses the compiled twin of a hot-loop module when it was built, else its pure twin.

Each twin is one plain-Python source compiled a second time with an augmenting .pxd in
cython_ext/, so the two cannot drift. MEDIACORE_NO_EXTENSIONS=1 forces the pure twins
(the tests run both builds). The packages that own a hot loop pick their own twins
(mediacore/hub/queues.py, ingest/rtp/compiled.py) with these helpers.
"""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType


def pick_module(module: str, pure: ModuleType) -> tuple[ModuleType, bool]:
    """(the compiled module if built and allowed, else `pure`; whether it is compiled)."""
    if os.environ.get("MEDIACORE_NO_EXTENSIONS") == "1":
        return pure, False
    try:
        compiled = importlib.import_module(module)
    except ImportError:  # not built: the pure twin serves
        return pure, False
    if compiled.__file__ is None or compiled.__file__.endswith(".py"):
        return pure, False
    return compiled, True


def pick(module: str, name: str, pure: type) -> tuple[type, bool]:
    """The class `name` from the compiled `module`, or `pure` itself."""
    chosen, compiled = pick_module(module, sys.modules[pure.__module__])
    return getattr(chosen, name), compiled
