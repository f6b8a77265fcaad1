"""Benchmarks of the course: simulator speed, scenario runs, scaling, and what is still to come.

``python -m benchmarks`` (``make bench``) writes ``benchmarks/results/latest.json``
and prints a short table; every figure is a median over repetitions with its
spread, and a ratio against a baseline measured in the same process run.
"""
