#!/usr/bin/env python3
"""`make bench`: the benchmark suite, i.e. `nexusctl bench` from this checkout.

    .venv/bin/python scripts/bench.py [--quick] [--write-docs] [--scenarios kernel,cpu,e2e,policy,cli] [--json]

See docs/benchmarks.md for what each figure means.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nexusctl.cli.app import main  # noqa: E402

if __name__ == "__main__":
    main(["bench", *sys.argv[1:]])
