"""Evaluation: per-volume metrics, evaluation per site, benchmarks, plots and reports."""
