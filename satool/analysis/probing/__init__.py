"""Probing: what representations say about phones and speakers.

:mod:`~satool.analysis.probing.tasks` defines the tasks (plugins register more), :mod:`~satool.analysis.probing.passes`
runs the model once per configuration and keeps what the tasks need, :mod:`~satool.analysis.probing.study`
puts them together beside the input features.
"""
