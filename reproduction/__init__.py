"""The small-scale reproduction of the GN paper: an application of detnorm, not part of it.

It runs from a clone of the repository (``configs/study/``, ``tools/``) and uses only detnorm's
public API and command lines. :mod:`reproduction.manifest` reads the cells,
:mod:`reproduction.runner` runs them, :mod:`reproduction.report` writes REPRODUCTION.md (with
each family's verdicts from :mod:`reproduction.analysis`), and :mod:`reproduction.cli` is
``tools/study.py``.
"""
