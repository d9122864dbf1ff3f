"""What satool reads about speech, and the built-in corpus it can make.

- :mod:`satool.data.audio`: audio files to mono float32 at 16 kHz, headers checked first;
- :mod:`satool.data.features`: the Mockingjay front end (log-Mel, log-linear) and MFCC;
- :mod:`satool.data.alignment`: TextGrids and TIMIT .PHN files, frame labels, boundaries;
- :mod:`satool.data.phones`: phone sets and the foldings between them;
- :mod:`satool.data.corpus`: corpus readers (LibriSpeech + MFA, TIMIT, any audio folder), splits;
- :mod:`satool.data.synth`: the built-in synthetic corpus (eSpeak NG, exact alignments);
- ``reference/``: the reference model's weights and provenance (package data, :mod:`satool.reference`).
"""
