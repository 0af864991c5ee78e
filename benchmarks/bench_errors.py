"""Speed of the order-violation error kernels against a chunked torch broadcast, and the machine's limit.

Prints, for a COCO 1K fold (default 5,000 captions x 1,000 images x 1,024 dims of
random non-negative unit vectors, fixed seed):

- the first-call cost of the compiled kernels (a cold compile, measured in a child
  process with an empty numba cache, and the cache load of this process);
- the kernel time (best of a few runs after warm-up) and the time of the
  straightforward chunked torch broadcast at its best chunk size;
- the machine's arithmetic limit for the fold (elements x 3 operations / peak
  FLOP/s, the peak derived from /proc/cpuinfo and the CPU affinity) and the
  fraction of it the kernel reaches;
- the full fold evaluation (error matrix + both directions' ranks and metrics);
- training's contrastive loss, forward and backward, through the kernels against
  the autograd broadcast (batch 128), alone and within a whole training step;
- the streaming top-k over a float16 memmap of many images;
- peak resident memory after each part; with a CUDA device, the torch broadcast on it
  and, where Triton is importable, the Triton kernels (cuda_kernels) on the COCO 5K test
  shape (25,000 x 5,000 x 1,024) against the GPU's FP32 instruction limit.

Usage: python benchmarks/bench_errors.py [--captions 25000 --images 5000] [--topk-images 1000000]
"""
from __future__ import annotations

import argparse
import functools
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numba
import numpy as np
import torch
from tqdm import tqdm

from order_embedding import evaluation, kernels


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """Random non-negative unit vectors (absolute values of Gaussians, L2-normalised), float32."""
    x = np.abs(rng.standard_normal((n, dim), dtype=np.float32))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def timed(fn: Callable[[], object], repeats: int, warmup: int = 1) -> tuple[float, float]:
    """Best wall time and the process CPU time of that run, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    best = (float("inf"), 0.0)
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        run = (time.perf_counter() - w, time.process_time() - c)
        best = min(best, run)
    return best


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where unavailable)."""
    info: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    for line in text.split("\n\n")[0].splitlines():
        key, _, value = line.partition(":")
        info[key.strip()] = value.strip()
    return info


def lscpu_max_mhz() -> float | None:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        if line.startswith("CPU max MHz:"):
            return float(line.split(":")[1])
    return None


def machine_peak() -> tuple[float, list[str]]:
    """Peak float32 FLOP/s of the CPUs this process may use, and the assumptions behind it."""
    info = cpuinfo()
    flags = set(info.get("flags", "").split())
    cores = len(os.sched_getaffinity(0))
    mhz_max = lscpu_max_mhz()
    mhz = mhz_max or float(info.get("cpu MHz", "0") or 0)
    vendor, family = info.get("vendor_id", "?"), info.get("cpu family", "?")
    if "avx512f" in flags and not (vendor == "AuthenticAMD" and family == "25"):
        lanes, isa = 16, "AVX-512"
    elif "avx512f" in flags:
        lanes, isa = 8, "AVX-512 on 256-bit datapaths (AMD family 25, Zen 4)"
    elif "avx2" in flags:
        lanes, isa = 8, "AVX2"
    else:
        lanes, isa = 4, "SSE"
    fma_units = 2 if "fma" in flags else 1
    flop_per_cycle = lanes * fma_units * (2 if "fma" in flags else 1)
    peak = cores * mhz * 1e6 * flop_per_cycle
    notes = [
        f"CPU: {info.get('model name', platform.processor())} ({vendor} family {family}), "
        f"{cores} cores usable (sched_getaffinity)",
        f"flags: avx2={'avx2' in flags} fma={'fma' in flags} avx512f={'avx512f' in flags} -> {isa}, "
        f"{lanes} float32 lanes per vector operation",
        f"clock: {mhz:.0f} MHz from {'lscpu CPU max MHz' if mhz_max else '/proc/cpuinfo cpu MHz'} "
        "(assumed sustained on all cores; a guest VM reports the nominal clock, turbo may be higher)",
        f"assumed {fma_units} FMA pipe(s) per core, an FMA counted as 2 FLOP: "
        f"{flop_per_cycle} FLOP/cycle/core -> peak {peak / 1e9:.1f} GFLOP/s",
        "the penalty needs 3 operations per (caption, image, dim) element: subtract, max, multiply-add",
    ]
    return peak, notes


def per_core(elements: int, cpu_seconds: float, peak: float, cores: int) -> str:
    """Throughput per CPU-second against the per-core limit: a figure that other load on the machine
    does not inflate (busy-waiting threads still count, so it errs low)."""
    rate = elements / max(cpu_seconds, 1e-9)
    core_limit = peak / cores / 3
    return (f"  per CPU-second: {rate / 1e9:.1f} G elements (per-core limit {core_limit / 1e9:.1f} G, "
            f"{rate / core_limit:.0%}); with all {cores} cores free that is about "
            f"{elements / rate / cores:.3f} s")


#: Ways of writing the chunked torch broadcast that the baseline tries (its best one is reported).
TORCH_VARIANTS = ("plain", "in-place", "preallocated")


def torch_broadcast(s: torch.Tensor, im: torch.Tensor, rows: int, variant: str = "plain") -> torch.Tensor:
    """The straightforward chunked broadcast: ``rows`` captions x all images x dim at a time.

    ``plain`` is ``(s - im).clamp(min=0).pow(2).sum(-1)`` per chunk; ``in-place`` clamps and
    squares the difference tensor in place; ``preallocated`` also reuses one difference
    buffer for all chunks (no allocation, so no page faults for fresh temporaries).
    Each chunk's result goes straight into a preallocated matrix (collecting many
    small results for one ``torch.cat`` fragments the heap when chunks are small).
    """
    out = torch.empty((s.shape[0], im.shape[0]), dtype=s.dtype, device=s.device)
    buffer = torch.empty((rows, im.shape[0], im.shape[1]), dtype=s.dtype, device=s.device)
    for i in range(0, s.shape[0], rows):
        chunk = s[i : i + rows].unsqueeze(1)
        if variant == "plain":
            out[i : i + rows] = (chunk - im.unsqueeze(0)).clamp(min=0).pow(2).sum(-1)
        elif variant == "in-place":
            out[i : i + rows] = (chunk - im.unsqueeze(0)).clamp_(min=0).pow_(2).sum(-1)
        else:
            diff = buffer[: chunk.shape[0]]
            torch.sub(chunk, im.unsqueeze(0), out=diff)
            diff.clamp_(min=0).mul_(diff)
            torch.sum(diff, -1, out=out[i : i + rows])
    return out


COLD_COMPILE = """
import time, numpy as np
t = time.perf_counter()
from order_embedding import kernels
imported = time.perf_counter() - t
x = np.random.default_rng(0).random((5, 8), dtype=np.float32)
t = time.perf_counter(); kernels.order_error_matrix(x, x); matrix = time.perf_counter() - t
t = time.perf_counter(); kernels.order_topk(x, x, 2); topk = time.perf_counter() - t
print(f"{imported:.2f} {matrix:.2f} {topk:.2f}")
"""


def section(title: str) -> None:
    print(f"\n== {title}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--captions", type=int, default=5000)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (best is reported)")
    parser.add_argument("--chunks", type=str, default="1,2,8", help="torch broadcast chunk sizes (captions)")
    parser.add_argument("--loss-batch", type=int, default=128, help="batch of the training-loss timing")
    parser.add_argument("--topk-queries", type=int, default=100)
    parser.add_argument("--topk-images", type=int, default=1_000_000, help="0 skips the top-k part")
    parser.add_argument("--topk-k", type=int, default=100)
    parser.add_argument("--topk-dtype", choices=["float16", "float32"], default="float16")
    parser.add_argument("--topk-file", type=Path, help="reuse (or create) this .npy image matrix for top-k")
    parser.add_argument("--skip-cold-compile", action="store_true", help="do not time a compile from an empty cache")
    parser.add_argument("--skip-baseline", action="store_true", help="do not time the torch broadcast")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gpu-captions", type=int, default=25000, help="captions for the CUDA kernels")
    parser.add_argument("--gpu-images", type=int, default=5000, help="images for the CUDA kernels")
    parser.add_argument("--gpu-clock-mhz", type=float,
                        help="GPU clock for its arithmetic limit (default: the device's reported clock_rate)")
    args = parser.parse_args(argv)

    threads = len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    peak, notes = machine_peak()
    section("machine")
    for note in notes:
        print("  " + note)
    print(f"  load average now: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          "(other processes on these cores slow every timing below)")
    print(f"  numba {numba.__version__} threads {numba.get_num_threads()}, "
          f"torch {torch.__version__} threads {torch.get_num_threads()}")
    print(f"  peak RSS after imports: {peak_rss_mb():.0f} MB")

    section("first call (compilation)")
    if not args.skip_cold_compile:
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, NUMBA_CACHE_DIR=cache)
            out = subprocess.run([sys.executable, "-c", COLD_COMPILE], env=env, capture_output=True, text=True)
        if out.returncode == 0:
            imported, matrix, topk = out.stdout.split()
            print(f"  empty numba cache: import {imported} s, first order_error_matrix {matrix} s, "
                  f"first order_topk {topk} s (compiles, then stores to the cache)")
        else:
            print(f"  cold compile run failed: {out.stderr.strip().splitlines()[-1:]}")
    tiny = np.ones((4, 8), dtype=np.float32)
    w = time.perf_counter()
    kernels.order_error_matrix(tiny, tiny)
    matrix_first = time.perf_counter() - w
    w = time.perf_counter()
    kernels.order_topk(tiny, tiny, 1)
    topk_first = time.perf_counter() - w
    print(f"  this process: first order_error_matrix {matrix_first:.2f} s, first order_topk {topk_first:.2f} s "
          "(loaded from the on-disk cache when it is warm)")

    n, m, d = args.captions, args.images, args.dim
    elements = n * m * d
    rng = np.random.default_rng(args.seed)
    s, im = unit_rows(rng, n, d), unit_rows(rng, m, d)
    limit = elements * 3 / peak

    section(f"error matrix {n} captions x {m} images x {d} dims ({elements / 1e9:.2f} G elements)")
    k_wall, k_cpu = timed(lambda: kernels.order_error_matrix(s, im), args.repeats)
    print(f"  kernel order_error_matrix: {k_wall:.3f} s (cpu {k_cpu:.2f} s), "
          f"{elements / k_wall / 1e9:.1f} G elements/s")
    print(f"  arithmetic limit: {limit:.3f} s -> kernel at {limit / k_wall:.0%} of the limit "
          f"({k_wall / limit:.2f}x the limit)")
    print(per_core(elements, k_cpu, peak, threads))
    errors = kernels.order_error_matrix(s, im)
    check = slice(0, min(n, 8))
    reference = (np.maximum(s[check, None, :].astype(np.float64) - im[None, :, :], 0.0) ** 2).sum(-1)
    print(f"  max relative deviation from float64 (first {check.stop} captions): "
          f"{np.abs(errors[check] - reference).max() / reference.max():.1e}")
    del errors, reference

    section("full fold evaluation (errors + text-to-image and image-to-text ranks and metrics)")
    cap2img = np.arange(n) // max(1, n // m) if n >= m else np.arange(n)
    cap2img = np.minimum(cap2img, m - 1)

    def fold() -> tuple[dict, dict]:
        e = kernels.order_error_matrix(s, im)
        return (evaluation.recall_metrics(evaluation.ranks_t2i(e, cap2img)),
                evaluation.recall_metrics(evaluation.ranks_i2t(e, cap2img)))

    f_wall, f_cpu = timed(fold, args.repeats)
    t2i, i2t = fold()
    print(f"  fold evaluation: {f_wall:.3f} s (cpu {f_cpu:.2f} s); t2i R@1 {t2i['R@1']:.1f}, i2t R@1 {i2t['R@1']:.1f} "
          "(random vectors)")
    print(f"  peak RSS so far: {peak_rss_mb():.0f} MB")

    loss_part(args)

    if args.topk_images > 0:
        topk_part(args, peak)

    if not args.skip_baseline:
        speedup = torch_baseline(args, s, im, threads, k_wall, k_cpu)

    if torch.cuda.is_available():
        section(f"CUDA torch broadcast ({torch.cuda.get_device_name()})")
        sc, ic = torch.from_numpy(s).cuda(), torch.from_numpy(im).cuda()
        for rows in (8, 32, 128):
            def run(rows: int = rows) -> None:
                torch_broadcast(sc, ic, rows, "preallocated")
                torch.cuda.synchronize()

            c_wall, _ = timed(run, args.repeats)
            print(f"  chunk {rows:4d} captions: {c_wall:.4f} s")
        cuda_kernel_part(args)

    section("summary")
    print(f"  kernel {k_wall:.3f} s | limit {limit:.3f} s | {k_wall / limit:.2f}x the limit | "
          f"{elements / k_cpu / (peak / threads / 3):.0%} of the per-core limit per CPU-second | "
          f"fold evaluation {f_wall:.3f} s")
    if not args.skip_baseline:
        print(f"  speed-up over the best torch broadcast ({speedup[1]}): {speedup[0]:.1f}x wall, "
              f"{speedup[2]:.1f}x cpu time (alternating runs)")
    return 0


def loss_part(args: argparse.Namespace) -> None:
    """Training's loss, forward and backward, through the kernels (the default on CPU) and through the
    autograd broadcast: alone, and inside a whole training step of the paper's model sizes."""
    from order_embedding.loss import contrastive_loss
    from order_embedding.measures import order_violation
    from order_embedding.model import ModelConfig, OrderEmbeddingModel

    batch, d = args.loss_batch, args.dim
    section(f"training loss, forward + backward: batch {batch} x {d} dims")
    gen = torch.Generator().manual_seed(args.seed)

    def loss_of(s: torch.Tensor, im: torch.Tensor, broadcast: bool) -> torch.Tensor:
        if not broadcast:
            return contrastive_loss(s, im, "order", 0.05)
        errors = order_violation(s.unsqueeze(1), im.unsqueeze(0))
        diagonal = errors.diagonal()
        off = ~torch.eye(len(s), dtype=torch.bool)
        return (((0.05 - errors + diagonal.view(-1, 1)).clamp(min=0) * off).sum()
                + ((0.05 - errors + diagonal.view(1, -1)).clamp(min=0) * off).sum())

    s0, im0 = torch.rand(batch, d, generator=gen), torch.rand(batch, d, generator=gen)

    def loss_step(broadcast: bool) -> tuple[float, torch.Tensor]:
        s, im = s0.clone().requires_grad_(), im0.clone().requires_grad_()
        loss = loss_of(s, im, broadcast)
        loss.backward()
        return loss.item(), s.grad

    k_wall, _ = timed(lambda: loss_step(False), args.repeats)
    b_wall, _ = timed(lambda: loss_step(True), args.repeats)
    (lk, gk), (lb, gb) = loss_step(False), loss_step(True)
    print(f"  loss alone, kernels (contrastive_loss on CPU float32): {k_wall * 1000:.1f} ms")
    print(f"  loss alone, autograd broadcast: {b_wall * 1000:.1f} ms -> kernels {b_wall / k_wall:.0f}x faster")
    print(f"  loss {lk:.4f} vs {lb:.4f}; max gradient deviation {float((gk - gb).abs().max()):.1e}")

    torch.manual_seed(args.seed)
    config = ModelConfig(n_words=10000, dim_word=300, dim=d, dim_image=4096)
    net = OrderEmbeddingModel(config)
    tokens = torch.randint(1, config.n_words, (batch, 14), generator=gen)
    lengths = torch.full((batch,), 14)
    features = torch.rand(batch, 4096, generator=gen)

    def train_step(broadcast: bool) -> None:
        net.zero_grad()
        s, im = net(tokens, lengths, features)
        loss_of(s, im, broadcast).backward()

    t_k, _ = timed(lambda: train_step(False), args.repeats)
    t_b, _ = timed(lambda: train_step(True), args.repeats)
    print(f"  whole training step (GRU {d}, words 300, image features 4096, 14 tokens): "
          f"{t_k * 1000:.0f} ms with the kernels, {t_b * 1000:.0f} ms with the broadcast ({t_b / t_k:.2f}x)")


def torch_baseline(args: argparse.Namespace, s: np.ndarray, im: np.ndarray, threads: int,
                   k_wall: float, k_cpu: float) -> tuple[float, str, float]:
    """Time every torch variant and chunk size, then the best one alternating with the kernel.

    Returns the kernel's speed-up over it in the alternating runs (wall, label, cpu time).
    """
    section("torch chunked broadcast (straightforward baseline)")
    st, it = torch.from_numpy(s), torch.from_numpy(im)
    few = kernels.order_error_matrix(s[:8], im)
    for variant in TORCH_VARIANTS:
        deviation = np.abs(torch_broadcast(st[:8], it, 2, variant).numpy() - few).max() / few.max()
        print(f"  {variant}: max relative deviation from the kernel on 8 captions {deviation:.1e}")
    best = (float("inf"), "", 0.0, (1, "plain", 1))
    for torch_threads in sorted({1, threads}):
        torch.set_num_threads(torch_threads)
        for variant in TORCH_VARIANTS:
            for rows in [int(c) for c in args.chunks.split(",")]:
                b_wall, b_cpu = timed(functools.partial(torch_broadcast, st, it, rows, variant), max(1, args.repeats // 2))
                label = f"{variant}, chunk {rows} captions, {torch_threads} thread(s)"
                print(f"  {label}: {b_wall:.3f} s (cpu {b_cpu:.2f} s)")
                best = min(best, (b_wall, label, b_cpu, (torch_threads, variant, rows)))
    print(f"  best torch broadcast: {best[0]:.3f} s ({best[1]}, cpu {best[2]:.2f} s)")
    print(f"  kernel speed-up over it: {best[0] / k_wall:.1f}x wall, {best[2] / k_cpu:.1f}x cpu time")
    # Load from other processes changes over a sweep this long: time the two again, alternating.
    torch_threads, variant, rows = best[3]
    kernel_runs, torch_runs = [], []
    for _ in range(args.repeats):
        torch.set_num_threads(threads)
        kernel_runs.append(timed(lambda: kernels.order_error_matrix(s, im), 1, warmup=0))
        torch.set_num_threads(torch_threads)
        torch_runs.append(timed(lambda: torch_broadcast(st, it, rows, variant), 1, warmup=0))
    torch.set_num_threads(threads)
    k_pair, t_pair = min(kernel_runs), min(torch_runs)
    print(f"  alternating runs, best of {args.repeats}: kernel {k_pair[0]:.3f} s (cpu {k_pair[1]:.2f} s), "
          f"torch {t_pair[0]:.3f} s (cpu {t_pair[1]:.2f} s) -> {t_pair[0] / k_pair[0]:.1f}x wall, "
          f"{t_pair[1] / k_pair[1]:.1f}x cpu time")
    print(f"  peak RSS after the torch baseline: {peak_rss_mb():.0f} MB")
    return t_pair[0] / k_pair[0], best[1], t_pair[1] / k_pair[1]


def gpu_limit(args: argparse.Namespace, elements: int) -> tuple[float | None, str]:
    """Seconds for ``elements`` x 3 FP32 instructions at one per lane and clock on all SMs, and how it was derived."""
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    # FP32 lanes per SM: 64 up to compute capability 8.0 (V100, T4, A100), 128 after (A10, L4, H100, B200).
    lanes = 64 if (props.major, props.minor) <= (8, 0) else 128
    if args.gpu_clock_mhz:
        mhz, source = args.gpu_clock_mhz, "--gpu-clock-mhz"
    elif getattr(props, "clock_rate", 0):
        mhz, source = props.clock_rate / 1000, "device clock_rate (its maximum clock, kHz)"
    else:
        return None, "no clock_rate reported: pass --gpu-clock-mhz for the limit"
    limit = elements * 3 / (props.multi_processor_count * lanes * mhz * 1e6)
    return limit, (f"{elements / 1e9:.1f} G elements x 3 instructions / ({props.multi_processor_count} SMs x "
                   f"{lanes} FP32 lanes x {mhz:.0f} MHz from {source}) = {limit:.4f} s")


def cuda_kernel_part(args: argparse.Namespace) -> None:
    """Time the Triton kernels against the GPU's arithmetic limit and the torch broadcast, same shape and run."""
    from order_embedding.kernels import cuda as cuda_kernels

    if not cuda_kernels.available():
        print("  Triton is not importable: the CUDA kernels are not timed")
        return
    n, m, d, k = args.gpu_captions, args.gpu_images, args.dim, 10
    elements = n * m * d
    section(f"CUDA Triton kernels: {n} captions x {m} images x {d} dims ({elements / 1e9:.1f} G elements)")
    rng = np.random.default_rng(args.seed + 3)
    sc, ic = torch.from_numpy(unit_rows(rng, n, d)).cuda(), torch.from_numpy(unit_rows(rng, m, d)).cuda()
    sh, ih = sc.half(), ic.half()
    limit, how = gpu_limit(args, elements)
    print(f"  arithmetic limit: {how}")

    def synced(fn: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            fn()
            torch.cuda.synchronize()
        return run

    # The warm-up call compiles and autotunes; the timed runs follow.
    results = {}
    for label, fn in (("order_error_matrix_cuda float32", lambda: cuda_kernels.order_error_matrix_cuda(sc, ic)),
                      ("order_error_matrix_cuda float16 inputs",
                       lambda: cuda_kernels.order_error_matrix_cuda(sh, ih)),
                      (f"order_topk_cuda k={k}", lambda: cuda_kernels.order_topk_cuda(sc, ic, k))):
        wall, _ = timed(synced(fn), args.repeats)
        results[label] = wall
        at_limit = (f", {limit / wall:.0%} of the limit ({wall / limit:.2f}x the limit)" if limit else "")
        print(f"  {label}: {wall:.4f} s, {elements / wall / 1e9:.0f} G elements/s{at_limit}")
    best = (float("inf"), 0)
    for rows in (32, 128):
        wall, _ = timed(synced(functools.partial(torch_broadcast, sc, ic, rows, "preallocated")), min(3, args.repeats))
        print(f"  torch broadcast (preallocated, chunk {rows} captions): {wall:.4f} s")
        best = min(best, (wall, rows))
    for label, wall in results.items():
        print(f"  {label}: speed-up over the best torch broadcast (chunk {best[1]}): {best[0] / wall:.1f}x")
    errors = cuda_kernels.order_error_matrix_cuda(sc, ic)
    few = min(n, 64)
    reference = torch_broadcast(sc[:few], ic, 8, "preallocated")
    deviation = ((errors[:few] - reference).abs().max() / reference.abs().max()).item()
    print(f"  error matrix: max relative deviation from the torch broadcast (first {few} captions) {deviation:.1e}")
    few = min(n, 256)
    top_err, top_idx = cuda_kernels.order_topk_cuda(sc[:few], ic, k)
    sorted_err, sorted_idx = torch.sort(errors[:few], dim=1, stable=True)
    same = torch.equal(top_idx, sorted_idx[:, :k]) and torch.equal(top_err, sorted_err[:, :k])
    print(f"  top-{k} {'equals' if same else 'DIFFERS FROM'} the stable sort of the error matrix "
          f"(first {few} captions)")


def topk_part(args: argparse.Namespace, peak: float) -> None:
    n_q, n_im, d, k = args.topk_queries, args.topk_images, args.dim, args.topk_k
    elements = n_q * n_im * d
    section(f"top-{k}: {n_q} queries over {n_im} images x {d} dims ({args.topk_dtype} memmap, "
            f"{elements / 1e9:.3g} G elements)")
    with tempfile.TemporaryDirectory() as tmp:
        path = args.topk_file or Path(tmp) / "images.npy"
        if path.exists():
            images = np.load(path, mmap_mode="r")
            if images.shape != (n_im, d) or images.dtype != np.dtype(args.topk_dtype):
                raise SystemExit(f"{path} holds {images.dtype} {images.shape}, not {args.topk_dtype} {(n_im, d)}")
        else:
            # Plain file writes (not a writable map) so that the written pages never count as resident.
            rng = np.random.default_rng(args.seed + 1)
            step = 20000
            with open(path, "wb") as f:
                header = {"descr": np.lib.format.dtype_to_descr(np.dtype(args.topk_dtype)),
                          "fortran_order": False, "shape": (n_im, d)}
                np.lib.format.write_array_header_1_0(f, header)
                for b in tqdm(range(0, n_im, step), desc="writing images", unit="block"):
                    f.write(unit_rows(rng, min(step, n_im - b), d).astype(args.topk_dtype).tobytes())
            images = np.load(path, mmap_mode="r")
        queries = unit_rows(np.random.default_rng(args.seed + 2), n_q, d)
        # A first pass reads the file into the page cache (and warms the kernel); the timed runs follow.
        kernels.order_topk(queries, images, k)
        t_wall, t_cpu = timed(functools.partial(kernels.order_topk, queries, images, k), max(1, args.repeats // 2), warmup=0)
        limit = elements * 3 / peak
        print(f"  order_topk: {t_wall:.3f} s (cpu {t_cpu:.2f} s), {elements / t_wall / 1e9:.1f} G elements/s")
        print(f"  arithmetic limit of the brute-force scan: {limit:.3f} s -> {limit / t_wall:.0%} of the limit "
              f"({t_wall / limit:.2f}x the limit)")
        print(per_core(elements, t_cpu, peak, len(os.sched_getaffinity(0))))
        print(f"  peak RSS so far: {peak_rss_mb():.0f} MB")
        del images


if __name__ == "__main__":
    raise SystemExit(main())
