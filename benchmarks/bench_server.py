"""Load check of the web app: many concurrent search requests against a local server.

Starts ``order-embedding serve`` on a free local port in a child process, lists the
runs (which starts preparing the split in the background) and times how long the
preparation takes, then for each ``--concurrency`` sends ``--requests`` text
searches that many at a time and prints latency percentiles, throughput and how
many requests were answered, with the CPU model and the load average (the machine
may be shared). Without ``--runs`` it builds a synthetic run of the paper's sizes
(dim 1024, 300-d words, 4096-d image features; untrained weights, which cost the
same to evaluate) over a split of ``--images`` images with five captions each (the
demo's test split has 1,000 images).

    python benchmarks/bench_server.py [--runs DIR --run NAME --split test] [--requests 2000 --concurrency 64 200]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlencode

import httpx
import numpy as np
import torch
from machine import cpu_model

from order_embedding import runs
from order_embedding.model import ModelConfig, OrderEmbeddingModel
from order_embedding.vocab import Vocabulary

WORDS = ("a man woman dog cat plate of food on the table with red blue green small large sitting standing next to "
         "street car bus train in front building riding horse beach water boat people group two three white black "
         "pizza kitchen bed room holding umbrella field grass playing ball tennis").split()


def synthetic_workspace(root: Path, n_images: int, seed: int = 0) -> tuple[Path, Path]:
    """A data folder (original layout, ``test`` split) and a runs folder holding one untrained paper-size run."""
    rng = np.random.default_rng(seed)
    data = root / "data"
    (data / "images" / "10crop").mkdir(parents=True)
    captions = [" ".join(rng.choice(WORDS, size=rng.integers(6, 14))) for _ in range(5 * n_images)]
    (data / "test.txt").write_text("\n".join(captions) + "\n")
    np.save(data / "images" / "10crop" / "test.npy", rng.random((n_images, 4096), dtype=np.float32))
    vocab = Vocabulary.build(captions)
    config = ModelConfig(n_words=vocab.size, dim_word=300, dim=1024, dim_image=4096, method="order")
    torch.manual_seed(seed)
    model = OrderEmbeddingModel(config)
    run = root / "runs" / "paper-size"
    run.mkdir(parents=True)
    vocab.save(run / runs.VOCAB)
    runs.save_json(run / runs.CONFIG, {"kind": "caption-image", "model": config.to_dict(), "train": {"data": str(data)}})
    runs.save_tensors(run / runs.BEST, model.state_dict())
    return data, root / "runs"




def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: str) -> tuple[int, bytes]:
    """One HTTP/1.1 GET on a kept-alive connection: status and body."""
    writer.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:"))
    return int(lines[0].split()[1]), await reader.readexactly(length)


async def load(port: int, run: str, split: str, n: int, concurrency: int, k: int,
               seed: int) -> tuple[list[float], int, Counter]:
    """Send ``n`` searches from ``concurrency`` clients, each on its own kept-alive connection (opened before
    timing starts); returns per-request seconds, answered count and failures by kind.

    A minimal HTTP client, so that the client's own work takes as little as possible of the CPU it shares
    with the server."""
    rng = np.random.default_rng(seed)
    queries = [" ".join(rng.choice(WORDS, size=rng.integers(3, 12))) for _ in range(n)]
    targets = ["/api/search?" + urlencode({"run": run, "split": split, "q": q, "k": k}) for q in queries]
    latencies: list[float] = []
    answered = 0
    failed: Counter = Counter()
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(concurrency)]
    for reader, writer in conns:  # every connection answers once before timing starts
        await _get(reader, writer, "/api/indexes")
    todo = iter(targets)

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal answered
        for target in todo:
            t = time.perf_counter()
            try:
                status, body = await _get(reader, writer, target)
            except (OSError, asyncio.IncompleteReadError, ValueError) as e:
                failed[type(e).__name__] += 1
                return
            latencies.append(time.perf_counter() - t)
            if status == 200 and len(json.loads(body)["results"]) == k:
                answered += 1
            else:
                failed[f"HTTP {status}"] += 1

    await asyncio.gather(*(client(r, w) for r, w in conns))
    for _, writer in conns:
        writer.close()
    return latencies, answered, failed


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=Path, help="runs folder to serve (default: a synthetic paper-size run)")
    p.add_argument("--data", type=Path, help="data folder passed to the server")
    p.add_argument("--run", default="paper-size", help="run to query")
    p.add_argument("--split", default="test")
    p.add_argument("--images", type=int, default=1000, help="images of the synthetic split")
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--concurrency", type=int, nargs="+", default=[64, 200], help="clients at once (one pass each)")
    p.add_argument("--k", type=int, default=10)
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        runs_dir = args.runs
        if runs_dir is None:
            data, runs_dir = synthetic_workspace(Path(tmp), args.images)
        port = free_port()
        cmd = [sys.executable, "-m", "order_embedding", "serve", str(runs_dir), "--port", str(port)]
        if data is not None:
            cmd += ["--data", str(data)]
        server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + 60
            while True:
                try:
                    if httpx.get(base + "/api/runs", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.time() > deadline or server.poll() is not None:
                    raise SystemExit("the server did not start")
                time.sleep(0.2)
            print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; load average before: {load_average()}")
            t = time.perf_counter()
            listed = httpx.get(base + "/api/runs", timeout=60).json()
            row = next((r for r in listed["runs"] if r["id"] == args.run), None)
            if row is None or not row["searchable"]:
                raise SystemExit(f"run {args.run!r} is not a searchable run of {runs_dir}")
            while (row.get("prepared") or {}).get("state") in ("preparing", "not started") and args.split == "test":
                time.sleep(0.2)
                row = next(r for r in httpx.get(base + "/api/runs", timeout=60).json()["runs"] if r["id"] == args.run)
            print(f"background preparation after the first listing (load the model, encode the split): "
                  f"{time.perf_counter() - t:.2f} s ({(row.get('prepared') or {}).get('state')})")
            t = time.perf_counter()
            first = httpx.get(base + "/api/search", params={"run": args.run, "split": args.split, "q": "a man", "k": args.k},
                              timeout=600)
            first.raise_for_status()
            print(f"first search: {time.perf_counter() - t:.3f} s")
            ok = True
            for concurrency in args.concurrency:
                t = time.perf_counter()
                latencies, answered, failed = asyncio.run(
                    load(port, args.run, args.split, args.requests, concurrency, args.k, seed=1))
                wall = time.perf_counter() - t
                ms = np.array(latencies) * 1000
                print(f"{args.requests} searches, {concurrency} concurrent, top {args.k}: "
                      f"{answered} answered, {sum(failed.values())} failed {dict(failed) or ''}")
                print(f"  latency ms: p50 {np.percentile(ms, 50):.1f}  p90 {np.percentile(ms, 90):.1f}  "
                      f"p99 {np.percentile(ms, 99):.1f}  max {ms.max():.1f}")
                print(f"  throughput: {args.requests / wall:.0f} requests/s over {wall:.1f} s; "
                      f"load average after: {load_average()}")
                ok = ok and answered == args.requests
        finally:
            server.terminate()
            server.wait(timeout=30)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
