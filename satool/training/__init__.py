"""Pre-training a Mockingjay model and checking that it learned.

:mod:`~satool.training.masking` (the masked acoustic model's inputs), :mod:`~satool.training.pretrain`
(the training loop, resumable and deterministic) and :mod:`~satool.training.heldout` (held-out masked
L1 beside four baselines, attention off, head locality).
"""
