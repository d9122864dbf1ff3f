"""Whisper encoders from local Hugging Face checkpoint directories (``model_type: whisper``).

``directory``: config.json and the weights checked and read without transformers (only the encoder's
tensors are kept); ``features``: Whisper's log-Mel front end (WhisperFeatureExtractor's computation,
without the 30 s padding); ``network``: the encoder, every head's map returned and maskable;
``model``: behind satool's interface; ``loader``: the built-in ``whisper`` loader. The decoder is never
built. docs/other-models.md describes what a directory must hold.
"""
