"""``satool view``: browse every head of every utterance, over the spectrogram, with phones and audio.

:mod:`satool.view.data` reads a cache (and the metric and relation results beside it) lazily;
:mod:`satool.view.server` serves it on the local machine; :mod:`satool.view.export` writes the same
page with chosen utterances as one self-contained file. See docs/view.md.
"""
