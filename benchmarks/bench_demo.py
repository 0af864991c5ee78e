"""The demo's time: one update of the small CNN on channels-first against channels-last images, and the
wall time of ``demo --quick`` (and, with ``--full``, of the full demo) from an empty folder.

The CNN is timed in this process (``--threads`` torch threads, the full demo's batch of 128 images of
48 x 48, forward, backward and an Adam step, the median of ``--repeats`` after two warm-ups); each demo
runs as its own process with ``--threads`` in a temporary folder, world generation included. Prints each
figure, the ratio of the CNN's two layouts, and the CPU model.

Usage: python benchmarks/bench_demo.py [--threads 2] [--repeats 20] [--full]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from machine import cpu_model


def cnn_update_seconds(channels_last: bool, repeats: int) -> float:
    """Median seconds of one training update of the full demo's small CNN on a random batch."""
    from order_embedding import demo
    from order_embedding.backbones import small_cnn

    torch.manual_seed(0)
    net = small_cnn(demo.FULL.dim_image, width=demo.FULL.cnn_width, image_size=demo.FULL.image_size)
    if not channels_last:
        net = torch.nn.Sequential(*net)  # the same layers, fed the images as they are (channels first)
    images = torch.rand(demo.FULL.batch_size, 3, demo.FULL.image_size, demo.FULL.image_size)
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    times = []
    for k in range(repeats + 2):
        start = time.perf_counter()
        optimizer.zero_grad()
        net(images).sum().backward()
        optimizer.step()
        if k >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def demo_seconds(quick: bool, threads: int) -> float:
    """Wall seconds of one ``order-embedding demo`` run from an empty folder."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "order_embedding", "demo", "--quiet", "--threads", str(threads),
                   "--out", str(Path(tmp) / "demo")] + (["--quick"] if quick else [])
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="CPU threads of the CNN timing and of each demo")
    ap.add_argument("--repeats", type=int, default=20, help="CNN updates timed per layout")
    ap.add_argument("--full", action="store_true", help="also time the full demo (about ten minutes)")
    args = ap.parse_args()
    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical CPUs; {args.threads} thread(s)")
    torch.set_num_threads(args.threads)
    first = cnn_update_seconds(False, args.repeats)
    last = cnn_update_seconds(True, args.repeats)
    print(f"small CNN update, channels first: {first:.4f} s")
    print(f"small CNN update, channels last:  {last:.4f} s ({first / last:.2f}x as fast)")
    print(f"demo --quick: {demo_seconds(True, args.threads):.0f} s of wall time", flush=True)
    if args.full:
        print(f"demo (full): {demo_seconds(False, args.threads):.0f} s of wall time")


if __name__ == "__main__":
    main()
