"""Built-in model loaders, registered like any plugin's."""

from __future__ import annotations

from satool import hookimpl


@hookimpl
def register_models(register):
    from satool.models.loading import builtin_loaders

    for loader in builtin_loaders():  # asked newest first: whisper, hf-speech (directories only), then mockingjay
        register(loader)
