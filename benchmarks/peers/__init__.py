"""The peers durable is measured against, each behind a small class that starts, runs and
stops it; every one raises ``benchmarks.common.Skip`` when its package is not installed."""
