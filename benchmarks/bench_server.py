"""Load check of the web app: many concurrent search requests against a local server.

Starts ``order-embedding serve`` on a free local port in a child process, sends
``--requests`` text searches (``--concurrency`` at a time) and prints latency
percentiles, throughput and how many requests were answered. Without ``--runs`` it
builds a synthetic run of the paper's sizes (dim 1024, 300-d words, 4096-d image
features; untrained weights, which cost the same to evaluate) over a split of
``--images`` images with five captions each.

    python benchmarks/bench_server.py [--runs DIR --run NAME --split test] [--requests 2000 --concurrency 64]
"""
from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import torch

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def load(base: str, run: str, split: str, n: int, concurrency: int, k: int,
               seed: int) -> tuple[list[float], int, Counter]:
    """Send ``n`` searches, ``concurrency`` at a time; returns per-request seconds, answered count and failures by kind."""
    rng = np.random.default_rng(seed)
    queries = [" ".join(rng.choice(WORDS, size=rng.integers(3, 12))) for _ in range(n)]
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    answered = 0
    failed: Counter = Counter()

    async with httpx.AsyncClient(base_url=base, timeout=120,
                                 limits=httpx.Limits(max_connections=concurrency)) as client:
        async def one(q: str) -> None:
            nonlocal answered
            async with gate:
                t = time.perf_counter()
                try:
                    r = await client.get("/api/search", params={"run": run, "split": split, "q": q, "k": k})
                except httpx.HTTPError as e:
                    failed[type(e).__name__] += 1
                    return
                latencies.append(time.perf_counter() - t)
                if r.status_code == 200 and len(r.json()["results"]) == k:
                    answered += 1
                else:
                    failed[f"HTTP {r.status_code}"] += 1

        await asyncio.gather(*(one(q) for q in queries))
    return latencies, answered, failed


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=Path, help="runs folder to serve (default: a synthetic paper-size run)")
    p.add_argument("--data", type=Path, help="data folder passed to the server")
    p.add_argument("--run", default="paper-size", help="run to query")
    p.add_argument("--split", default="test")
    p.add_argument("--images", type=int, default=1000, help="images of the synthetic split")
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=64)
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
            t = time.perf_counter()
            first = httpx.get(base + "/api/search", params={"run": args.run, "split": args.split, "q": "a man", "k": args.k},
                              timeout=600)
            first.raise_for_status()
            print(f"first search (loads the model, encodes the split): {time.perf_counter() - t:.2f} s")
            t = time.perf_counter()
            latencies, answered, failed = asyncio.run(
                load(base, args.run, args.split, args.requests, args.concurrency, args.k, seed=1))
            wall = time.perf_counter() - t
        finally:
            server.terminate()
            server.wait(timeout=30)
    ms = np.array(latencies) * 1000
    print(f"{args.requests} searches, {args.concurrency} concurrent, top {args.k}: "
          f"{answered} answered, {sum(failed.values())} failed {dict(failed) or ''}")
    print(f"latency ms: p50 {np.percentile(ms, 50):.1f}  p90 {np.percentile(ms, 90):.1f}  "
          f"p99 {np.percentile(ms, 99):.1f}  max {ms.max():.1f}")
    print(f"throughput: {args.requests / wall:.0f} requests/s over {wall:.1f} s")
    return 0 if answered == args.requests else 1


if __name__ == "__main__":
    sys.exit(main())
