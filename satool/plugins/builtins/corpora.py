"""Built-in corpus readers, registered like any plugin's."""

from __future__ import annotations

from satool import hookimpl


@hookimpl
def register_corpora(register):
    from satool.data.corpus.audiodir import AudioDirReader
    from satool.data.corpus.librispeech import LibriSpeechReader
    from satool.data.corpus.timit import TimitReader

    register(LibriSpeechReader())
    register(TimitReader())
    register(AudioDirReader())
