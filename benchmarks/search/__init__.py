"""Helpers for benchmarks/search_efficiency.py: tables, baselines, kubenas runner, scoring."""
