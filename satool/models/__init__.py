"""Models satool can look inside, behind one interface (:mod:`satool.models.base`).

- :mod:`satool.models.base`: what every model provides (maps, hidden states, probing passes);
- :mod:`satool.models.loading`: ``load_model(path, loaders=...)``, the first of the given loaders (the
  registry's, passed in by the stages; satool's own by default) that accepts it;
- :mod:`satool.models.mockingjay`: the Mockingjay encoder (``network``), its checkpoints
  (``checkpoint``), the adapter to the interface (``model``) and the loader (``loader``);
- :mod:`satool.models.hf`: wav2vec 2.0, HuBERT and WavLM from local transformers directories;
- :mod:`satool.models.safe_pickle`: reading untrusted torch files without running their code.

Imports only go one way (loading -> loaders -> model families -> base), and importing this package
does not import torch.
"""
