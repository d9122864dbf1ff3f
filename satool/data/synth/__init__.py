"""A multi-speaker, phone-aligned English corpus made offline with eSpeak NG.

    from satool.data.synth import synthesize_corpus, SynthConfig
    manifest = synthesize_corpus("synth", speakers=40, utterances_per_speaker=30, seed=0)

Needs the optional extra ``pip install 'satool[synth]'`` (espeakng-loader,
which bundles the GPL-3.0 eSpeak NG library). See docs/synthetic-corpus.md.

Modules: ``engine`` (ctypes binding), ``voices`` (speaker voices), ``text``
(sentences), ``phones`` (eSpeak -> ARPAbet/TIMIT), ``align`` (events +
silences -> segments), ``writers`` (TextGrid/PHN), ``corpus`` (the layout).
"""

from satool.data.synth.align import SilenceRule
from satool.data.synth.corpus import SynthConfig, render_utterance, synthesize_corpus
from satool.data.synth.engine import INSTALL_HINT, get_engine
from satool.data.synth.phones import FOLDED_39, UnknownPhonemeError, fold_timit
from satool.data.synth.voices import Voice, make_voices

__all__ = [
    "FOLDED_39",
    "INSTALL_HINT",
    "SilenceRule",
    "SynthConfig",
    "UnknownPhonemeError",
    "Voice",
    "fold_timit",
    "get_engine",
    "make_voices",
    "render_utterance",
    "synthesize_corpus",
]
