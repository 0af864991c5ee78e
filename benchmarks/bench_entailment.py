"""Wall time of ``order-embedding entailment`` on the generated corpus against its targets.

Runs ``entailment --quick`` (target 60 s on 2 cores) and, with ``--full``, the full
default (target 10 minutes), each in a fresh process, in a temporary folder, and prints
the wall time, its ratio to the target, the order model's test accuracy (target 90 %
for the full default) with the best other method's, the CPU model and the load average
before and after (on shared cores the figures are pessimistic).

Usage: python benchmarks/bench_entailment.py [--full]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_model

TARGETS = {"quick": 60.0, "full": 600.0}




def run(name: str, extra: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "results.json"
        before = os.getloadavg()[0]
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "order_embedding", "entailment", *extra, "--quiet",
                        "--save_dir", tmp, "--json", str(out)], check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t
        models = json.loads(out.read_text())["models"]
    others = max((m["test_accuracy"], k) for k, m in models.items() if k != "order")
    print(f"{name}: {wall:.1f} s wall ({wall / TARGETS[name]:.2f} x the {TARGETS[name]:.0f} s target); "
          f"order test {models['order']['test_accuracy']:.2f} %, best other {others[1]} {others[0]:.2f} %; "
          f"load average {before:.1f} before, {os.getloadavg()[0]:.1f} after")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="also time the full default run (about 10 minutes)")
    args = parser.parse_args()
    print(f"{cpu_model()}, {os.cpu_count()} CPUs")
    run("quick", ["--quick"])
    if args.full:
        run("full", [])


if __name__ == "__main__":
    main()
