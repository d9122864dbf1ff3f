"""wav2vec 2.0, HuBERT and WavLM from local Hugging Face checkpoint directories.

``directory``: what a directory holds (no torch needed to inspect it); ``loader``: the ``hf-speech``
loader; ``checks``: the config's numbers and the safetensors headers, checked before transformers
reads them; ``model``: the transformer run by satool, every head's map returned and maskable.
"""
