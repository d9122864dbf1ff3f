"""DistilHuBERT and other s3prl ``distiller`` checkpoints (Chang et al., ICASSP 2022; s3prl's
``upstream/distiller``): a wav2vec 2.0-style convolutional front end and a few transformer layers,
distilled from HuBERT.

``checkpoint``: the file read through the restricted unpickler and its ``distiller`` config checked
(the conv-layer string that s3prl ``eval``s is parsed without evaluation) against the weights before
anything is built; ``network``: the encoder, satool's own code with s3prl's module names, every head's
map returned and maskable; ``model``: behind satool's interface; ``loader``: the built-in ``distiller``
loader.
"""
