"""Index benchmark: exact and FAISS-assisted search over 1M images, and peak memory of the large jobs.

Prints, for ``--images`` generated image embeddings of dimension 1,024 (float16 on disk):

- exact search time per batch of 100 queries: the full blockwise order-violation
  top-10 scan, and the same search skipping images through the index's 7-bit
  lower bounds (on CPUs with AVX-512 VNNI), with the fraction of pairs it scored
  and whether its result equals the full scan's,
- FAISS IVF candidates re-ranked exactly: recall@10 against exact search and speed-up,
- peak resident memory (each job in its own process, ``VmHWM``) of building the
  index, encoding a 1M-caption file (the shared COCO test captions repeated), and
  evaluating a COCO 5K-sized test (25,000 x 5,000, dimension 1,024) through
  ``evaluation.embedding_ranks``.

The image embeddings are produced by a randomly initialised model from generated,
clustered 1,024-d features, so the index build is measured on the real path. Two
query sets: captions encoded by the same model, and perturbed copies of stored
images (queries with true near neighbours). Usage:

    python benchmarks/bench_index.py --workdir /tmp/oe-bench [--images 1000000] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CAPTIONS = REPO.parent / "shared" / "data" / "coco_karpathy_test5k_captions.txt"


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (``VmHWM``: unlike ``ru_maxrss`` it does not carry the
    launching process's peak across ``exec``)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_run(path: Path, dim_image: int, dim: int, dim_word: int, seed: int = 0) -> Path:
    """A randomly initialised caption-image run folder with the vocabulary of the shared captions."""
    import torch

    from order_embedding import runs
    from order_embedding.model import ModelConfig, OrderEmbeddingModel
    from order_embedding.vocab import Vocabulary

    if (path / runs.BEST).is_file():
        return path
    path.mkdir(parents=True, exist_ok=True)
    vocab = Vocabulary.build(CAPTIONS.read_text().splitlines())
    torch.manual_seed(seed)
    config = ModelConfig(n_words=vocab.size, dim_word=dim_word, dim=dim, dim_image=dim_image)
    net = OrderEmbeddingModel(config)
    vocab.save(path / runs.VOCAB)
    runs.save_json(path / runs.CONFIG, {"kind": "caption-image", "model": config.to_dict(), "train": {}})
    runs.save_tensors(path / runs.BEST, net.state_dict(), {})
    return path


def make_features(path: Path, n: int, dim: int, clusters: int = 2000, block: int = 65536, seed: int = 0) -> Path:
    """Clustered, L2-normalised feature rows written block by block."""
    from order_embedding.data.npy import NpyWriter

    if path.is_file():
        return path
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim), dtype=np.float32)
    tmp = path.with_suffix(".tmp")
    writer = NpyWriter(tmp, (n, dim), np.float32)
    for start in range(0, n, block):
        m = min(block, n - start)
        x = centers[rng.integers(0, clusters, m)] + 0.8 * rng.standard_normal((m, dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        writer.write(x)
    writer.close()
    os.replace(tmp, path)
    return path


def make_caption_file(path: Path, n: int) -> Path:
    """``n`` lines: the shared COCO test captions repeated."""
    if path.is_file():
        return path
    lines = CAPTIONS.read_text().splitlines()
    with open(path.with_suffix(".tmp"), "w") as f:
        for i in range(0, n, len(lines)):
            f.write("\n".join(lines[: min(len(lines), n - i)]) + "\n")
    os.replace(path.with_suffix(".tmp"), path)
    return path


# Jobs measured in their own process -----------------------------------------------------------------


def job_build(work: Path) -> dict:
    from order_embedding.index import build_index

    t = time.perf_counter()
    build_index(work / "run", work / "features.npy", work / "index", dtype="float16", overwrite=True, verbose=True)
    return {"seconds": time.perf_counter() - t}


def job_captions(work: Path, dim: int, dim_word: int) -> dict:
    from order_embedding.inference import encode_captions_file, load_model

    model = load_model(work / f"run_captions_{dim}_{dim_word}", device="cpu")
    t = time.perf_counter()
    shape = encode_captions_file(model, work / "captions_1m.txt", work / "captions_1m.npy", verbose=True)
    return {"seconds": time.perf_counter() - t, "shape": list(shape), "dim": model.config.dim}


def job_evaluate(work: Path) -> dict:
    from order_embedding.evaluation import embedding_ranks, recall_metrics
    from order_embedding.measures import order_errors

    rng = np.random.default_rng(1)
    im = np.abs(rng.standard_normal((5000, 1024), dtype=np.float32))
    im /= np.linalg.norm(im, axis=1, keepdims=True)
    s = np.abs(np.repeat(im, 5, axis=0) + 0.5 * rng.standard_normal((25000, 1024), dtype=np.float32))
    s /= np.linalg.norm(s, axis=1, keepdims=True)
    t = time.perf_counter()
    r_t2i, r_i2t = embedding_ranks(s, im, np.arange(25000) // 5, order_errors)
    return {"seconds": time.perf_counter() - t, "t2i_R@10": recall_metrics(r_t2i)["R@10"],
            "i2t_R@10": recall_metrics(r_i2t)["R@10"]}


def job_search(work: Path, batches: int, nlist: int, candidates: list[int], nprobes: list[int]) -> dict:
    from order_embedding.index import BOUNDS, Index, build_ann
    from order_embedding.inference import encode_sentences

    index = Index(work / "index")
    rng = np.random.default_rng(2)
    captions = CAPTIONS.read_text().splitlines()
    pick = rng.choice(len(captions), 100 * batches, replace=False)
    stored = index.embeddings()
    near = np.asarray(stored[np.sort(rng.choice(len(index), 100 * batches, replace=False))], np.float32)
    near = np.abs(near + 0.02 * rng.standard_normal(near.shape, dtype=np.float32))
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    sets = {"captions": encode_sentences(index.model(), [captions[i] for i in pick]), "perturbed images": near}
    out: dict = {"images": len(index), "dim": index.meta["dim"], "dtype": index.meta["dtype"],
                 "bounded": index.bounded(), "query_sets": {}}
    exact = {}
    for name, q in sets.items():
        report: dict = {}
        found = {}
        for label, use_bounds in (("full_scan", False), ("bounded", True)):
            if use_bounds and not index.bounded():
                continue
            index.search_vectors(q[:4], k=10, bounds=use_bounds)  # loads the compiled kernels
            times, results = [], []
            for b in range(batches):
                t = time.perf_counter()
                results.append(index.search_vectors(q[100 * b : 100 * (b + 1)], k=10, bounds=use_bounds))
                times.append(time.perf_counter() - t)
            found[label] = (np.concatenate([r[0] for r in results]), np.concatenate([r[1] for r in results]))
            report[f"{label}_seconds_per_100"] = float(np.mean(times))
            report[f"{label}_batch_times"] = times
        exact[name] = found["full_scan"][1]
        report["exact_seconds_per_100"] = report.get("bounded_seconds_per_100", report["full_scan_seconds_per_100"])
        if "bounded" in found:
            from order_embedding.kernels.bounds import order_topk_bounded

            stats: dict = {}
            bounds = np.load(index.path / BOUNDS, mmap_mode="r", allow_pickle=False)
            order_topk_bounded(q[:100], index.embeddings(), bounds, index.meta["bounds"]["step"], 10, stats=stats)
            report["bounded_scored_fraction"] = stats["scored_pairs"] / stats["pairs"]
            report["bounded_equals_full_scan"] = bool(np.array_equal(found["bounded"][0], found["full_scan"][0])
                                                      and np.array_equal(found["bounded"][1], found["full_scan"][1]))
        out["query_sets"][name] = report
    out["exact_peak_rss_mb"] = peak_rss_mb()
    if not (index.path / "faiss.index").is_file():
        t = time.perf_counter()
        build_ann(index.path, kind="ivf", nlist=nlist, verbose=True)
        out["faiss_build_seconds"] = time.perf_counter() - t
    for name, q in sets.items():
        rows = []
        for cand in candidates:
            for nprobe in nprobes:
                times, found = [], []
                for b in range(batches):
                    t = time.perf_counter()
                    found.append(index.search_vectors(q[100 * b : 100 * (b + 1)], k=10, approximate=True,
                                                      candidates=cand, nprobe=nprobe)[1])
                    times.append(time.perf_counter() - t)
                found_all = np.concatenate(found)
                recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(found_all, exact[name])])
                sec = float(np.mean(times))
                rows.append({"candidates": cand, "nprobe": nprobe, "seconds_per_100": sec, "recall@10": float(recall),
                             "speedup": out["query_sets"][name]["exact_seconds_per_100"] / sec})
        out["query_sets"][name]["faiss_ivf"] = rows
    return out


def run_job(args: argparse.Namespace, job: str, extra: list[str]) -> dict:
    """Run one job in a fresh process and return its JSON report (with its peak RSS)."""
    cmd = [sys.executable, __file__, "--job", job, "--workdir", str(args.workdir), "--threads", str(args.threads),
           "--images", str(args.images), "--captions", str(args.captions), "--caption-dim", str(args.caption_dim),
           "--caption-word-dim", str(args.caption_word_dim), *extra]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, required=True, help="scratch folder (about 8 GB)")
    p.add_argument("--images", type=int, default=1_000_000)
    p.add_argument("--captions", type=int, default=1_000_000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batches", type=int, default=2, help="100-query batches timed per query set")
    p.add_argument("--nlist", type=int, default=1024)
    p.add_argument("--candidates", default="1000,4000")
    p.add_argument("--nprobe", default="16,64")
    p.add_argument("--caption-dim", type=int, default=64,
                   help="GRU state size of the caption-encoding job (1,024 takes hours on 2 cores)")
    p.add_argument("--caption-word-dim", type=int, default=64, help="word vector size of the caption-encoding job")
    p.add_argument("--jobs", default="build,captions,evaluate,search")
    p.add_argument("--job", help=argparse.SUPPRESS)
    args = p.parse_args()
    os.environ.setdefault("NUMBA_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    try:
        import faiss

        faiss.omp_set_num_threads(args.threads)
    except ImportError:
        pass
    work = args.workdir
    lists = [int(x) for x in args.candidates.split(",")], [int(x) for x in args.nprobe.split(",")]
    if args.job:
        report = {
            "build": lambda: job_build(work),
            "captions": lambda: job_captions(work, args.caption_dim, args.caption_word_dim),
            "evaluate": lambda: job_evaluate(work),
            "search": lambda: job_search(work, args.batches, args.nlist, *lists),
        }[args.job]()
        print(json.dumps({**report, "peak_rss_mb": peak_rss_mb()}))
        return
    work.mkdir(parents=True, exist_ok=True)
    print(f"load average {os.getloadavg()}, {args.threads} threads, {args.images} images, workdir {work}", flush=True)
    make_run(work / "run", 1024, 1024, 300)
    make_run(work / f"run_captions_{args.caption_dim}_{args.caption_word_dim}", 1024, args.caption_dim,
             args.caption_word_dim)
    make_features(work / "features.npy", args.images, 1024)
    make_caption_file(work / "captions_1m.txt", args.captions)
    jobs = args.jobs.split(",")
    results = {}
    for job in jobs:
        if job not in ("build", "captions", "evaluate", "search"):
            raise SystemExit(f"unknown job {job!r}")
        if job == "search" and not (work / "index").is_dir():
            results["build"] = run_job(args, "build", [])
        extra = ["--batches", str(args.batches), "--nlist", str(args.nlist), "--candidates", args.candidates,
                 "--nprobe", args.nprobe] if job == "search" else []
        results[job] = run_job(args, job, extra)
        print(f"{job}: {json.dumps(results[job])}", flush=True)
    print("\nsummary")
    if "build" in results:
        print(f"  index build ({args.images} x 1024 float16): {results['build']['seconds']:.1f} s, "
              f"peak RSS {results['build']['peak_rss_mb']:.0f} MiB")
    if "captions" in results:
        r = results["captions"]
        print(f"  encode {r['shape'][0]} captions (dim {r['dim']}): {r['seconds']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MiB")
    if "evaluate" in results:
        r = results["evaluate"]
        print(f"  5K-sized evaluation (25000 x 5000 x 1024): {r['seconds']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MiB")
    if "search" in results:
        r = results["search"]
        for name, q in r["query_sets"].items():
            print(f"  {name}: exact full scan {q['full_scan_seconds_per_100']:.3f} s per 100 queries")
            if "bounded_seconds_per_100" in q:
                print(f"    exact with 7-bit bounds {q['bounded_seconds_per_100']:.3f} s per 100 queries "
                      f"({q['full_scan_seconds_per_100'] / q['bounded_seconds_per_100']:.1f}x), "
                      f"{q['bounded_scored_fraction']:.2%} of pairs scored in float32, "
                      f"same result as the full scan: {q['bounded_equals_full_scan']}")
            for row in q["faiss_ivf"]:
                print(f"    IVF{args.nlist},SQ8 candidates {row['candidates']} nprobe {row['nprobe']}: "
                      f"{row['seconds_per_100']:.3f} s, recall@10 {row['recall@10']:.3f}, speed-up {row['speedup']:.1f}x")
        print(f"  search process peak RSS {r['exact_peak_rss_mb']:.0f} MiB after exact search, "
              f"{r['peak_rss_mb']:.0f} MiB after FAISS training and search")


if __name__ == "__main__":
    main()
