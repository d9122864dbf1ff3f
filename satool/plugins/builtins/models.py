"""Built-in model loaders, registered like any plugin's."""

from __future__ import annotations

from satool import hookimpl


@hookimpl
def register_models(register):
    from satool.models.hf.loader import HFLoader
    from satool.models.mockingjay.loader import MockingjayLoader

    register(MockingjayLoader())
    register(HFLoader())  # asked first (loaders are tried newest first); accepts directories only
