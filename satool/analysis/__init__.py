"""What satool computes from attention maps and representations.

- :mod:`~satool.analysis.metrics`: per-utterance head metrics (G, V, D, W) and the plugin interface;
- :mod:`~satool.analysis.scoring`: metrics over a corpus (``HeadScores``), ranks, categories, streams;
- :mod:`~satool.analysis.locality`: offset profiles, locality, D relative to uniform attention;
- :mod:`~satool.analysis.segmentation`: phone boundaries (algorithm, evaluation, tuning, study);
- :mod:`~satool.analysis.relations`: phone relation maps;
- :mod:`~satool.analysis.probing`: probing tasks, representation passes, the probe study;
- :mod:`~satool.analysis.pruning`: head and span pruning sweeps;
- :mod:`~satool.analysis.verdicts`: the paper's findings judged by stated rules, the health gate.
"""
