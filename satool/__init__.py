"""satool: understand the self-attention of self-supervised speech transformers.

Library first: every stage is a plain function (see docs/api.md); the
``satool`` command is a thin Typer layer over them. Plugins implement the
hooks in :mod:`satool.hookspecs` with the ``hookimpl`` marker below.
"""

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("satool")

__all__ = ["__version__", "hookimpl"]
