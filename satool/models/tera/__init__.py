"""TERA and Audio ALBERT: s3prl's other Mockingjay-architecture models.

s3prl 0.4.18 builds both with Mockingjay's code (``upstream/tera`` and ``upstream/audio_albert``
import ``upstream/mockingjay``'s builder and expert; their pre-training experts import Mockingjay's),
and writes the same checkpoint layouts. What differs is the training (TERA: time, channel and
magnitude alterations; Audio ALBERT: one layer's weights shared by every layer) and, for some TERA
checkpoints, the input features (Kaldi fbank/MFCC with deltas instead of the online log-Mel front end).

``family``: which of the three a checkpoint is (and why); ``kaldi``: the Kaldi-style ``audio`` block
(``torchaudio.compliance.kaldi`` + deltas + CMVN) read and computed as s3prl does; ``model``: the
Mockingjay model behind satool's interface, named after its family, with either front end.
"""
