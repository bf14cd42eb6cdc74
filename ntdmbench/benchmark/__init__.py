"""Metrics, runner (predict -> score), results store, suites, timing and the CLI."""
