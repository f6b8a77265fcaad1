"""Run the benchmarks: ``python -m benchmarks [--quick]`` (``make bench`` runs the full set).

Writes every figure to ``benchmarks/results/latest.json`` (not committed) and
prints a short table. ``--quick`` runs the same code on tiny sizes with one
repetition: a smoke run that proves the benchmarks work, not a measurement.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.report import format_table, write_json
from benchmarks.settings import FULL, QUICK
from benchmarks.suite import ROOT, run_all

DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "latest.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line: mode, where to write, which notebooks to time."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes, one repetition: a smoke run, not a measurement")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help=f"JSON file to write (default: {DEFAULT_OUTPUT.relative_to(ROOT)})")
    parser.add_argument("--notebooks", type=Path, default=ROOT / "notebooks",
                        help="folder of lecture notebooks to time (default: notebooks/)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Measure, write the JSON file, print the table."""
    args = parse_args(argv)
    mode, settings = ("quick", QUICK) if args.quick else ("full", FULL)
    results = run_all(settings, mode, args.notebooks)
    write_json(results, args.output)
    print(format_table(results))
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
