"""The ``medidiff benchmark`` harness: score medidiff and classical baselines on degraded clean volumes.

:mod:`~medidiff.benchmark.config` (the YAML), :mod:`~medidiff.benchmark.cases` (reference and degraded
volumes of a case), :mod:`~medidiff.benchmark.methods` and :mod:`~medidiff.benchmark.baselines` (who
restores), :mod:`~medidiff.benchmark.worker` and :mod:`~medidiff.benchmark.rss` (one timed job and its peak
memory), :mod:`~medidiff.benchmark.scoring`, :mod:`~medidiff.benchmark.runner` (the loop) and
:mod:`~medidiff.benchmark.report` (tables). Everything is written into the run's output folder; presenting
results elsewhere (the repository's documentation) is the job of the repository's ``benchmarks/`` scripts.
"""
