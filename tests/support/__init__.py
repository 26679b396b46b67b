"""Helpers shared by the tests and the benchmark (scoring, data set loading)."""
