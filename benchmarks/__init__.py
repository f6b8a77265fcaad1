"""Benchmark scripts for the course library; each prints its figures as JSON."""
