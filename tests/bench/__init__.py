"""``make bench``: ingest and indicator benchmarks (``python -m tests.bench.run``), not in ``make test``."""
