"""durable's benchmark suite: ``python -m benchmarks [--quick] [--only NAME ...]``.

Every scenario measures durable and its peers side by side in one run, reports
medians of repeated runs, and writes ``benchmarks/results/``. See README.md here.
"""
