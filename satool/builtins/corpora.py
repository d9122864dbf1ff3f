"""Built-in corpus readers, registered like any plugin's."""

from __future__ import annotations

from satool import hookimpl


@hookimpl
def register_corpora(register):
    from satool.corpus.audiodir import AudioDirReader
    from satool.corpus.librispeech import LibriSpeechReader
    from satool.corpus.timit import TimitReader

    register(LibriSpeechReader())
    register(TimitReader())
    register(AudioDirReader())
