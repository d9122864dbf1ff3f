"""Built-in corpus readers, registered like any plugin's."""

from __future__ import annotations

from satool import hookimpl


@hookimpl
def register_corpora(register):
    from satool.data.corpus import builtin_readers

    for reader in builtin_readers():
        register(reader)
