"""One prepared check of the package on a CUDA GPU: correctness on the device and the speeds that matter there.

Usage: python benchmarks/gpu_check.py [OUTDIR] [--tiny] [--skip SECTION,...] [--gpu-clock-mhz MHZ]

Prints the GPU model, driver, torch and Triton versions, then runs these sections
(names for --skip) and writes everything under OUTDIR (default: $OUT):

- ``tests``: tests/test_cuda_kernels.py with the kernels on the GPU itself, the
  interpreter off (ORDER_EMBEDDING_TEST_DEVICE=cuda); its log is pytest.log.
- ``matrix``: the COCO 5K error matrix (25,000 captions x 5,000 images x 1,024
  dims, random non-negative unit rows) and its top-10 through the Triton kernels,
  against the GPU's FP32 limit and against torch broadcasting on the same device;
  errors against a float64 reference on 256 captions.
- ``train``: one training update at the paper's sizes (batch 128, 1,024-d
  embeddings, 300-d words, 4,096-d image features, a 10,000-word vocabulary,
  captions of 8 to 20 tokens), as training does it (the original's Adam rule,
  per-tensor clipping), with the loss's error matrix on each CUDA path
  (kernels.gpu.TRAINING_PATHS; "broadcast" is the straightforward autograd
  broadcasting of VSE++), the share of the update spent in the loss, and VSE++'s
  whole update (broadcast loss, torch's Adam, global clipping) beside them.
- ``match``: 20 training updates at small sizes on CUDA (each path) against the same
  updates on the CPU, from the same weights and batches (plain SGD, so that the
  comparison measures float32 rounding rather than Adam's division by tiny moments);
  they pass when the weights differ by at most 4 times the CPU float32 run's own
  distance from the same updates in float64.
- ``search``: exact top-10 of 100 caption queries over 10,000,000 generated 1,024-d
  float16 images held on the GPU (packed, as an index is), against a full scan by a
  separate path (the error matrix block by block, then sort keys), 5 queries against
  float64; and the same search streamed from host memory over 1,000,000 images.

Limits are counted as follows. The error matrix needs, per (caption, image, dim)
element, one subtraction, one maximum and one fused multiply-add: 3 FP32
instructions. The GPU issues at most (SMs x FP32 lanes per SM x clock) such
instructions per second, so the floor is elements x 3 / that rate. (At 2 FLOP per
FMA the same rate is the datasheet's peak FP32 FLOP/s: SMs x lanes x 2 x clock.) The
clock is the maximum SM clock nvidia-smi reports (else torch's clock_rate, else
--gpu-clock-mhz). The memory floor uses the copy bandwidth measured here (a 1 GiB
device-to-device copy, bytes read plus written).

--tiny runs every section but ``tests`` at small sizes; without a CUDA device it runs
the CUDA branches on CPU tensors through Triton's interpreter (the package's CI checks
the script that way). Without --tiny and without a CUDA device it stops with one line.
Files written: gpu_check.json (every figure), gpu_check.log (what it prints), pytest.log.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("tests", "matrix", "train", "match", "search")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Correctness and speed of the package on a CUDA GPU.")
    p.add_argument("outdir", nargs="?", type=Path, help="folder for the results (default: $OUT)")
    p.add_argument("--tiny", action="store_true", help="small sizes; on CPU through Triton's interpreter")
    p.add_argument("--skip", default="", help=f"comma-separated sections to skip ({', '.join(SECTIONS)})")
    p.add_argument("--gpu-clock-mhz", type=float, help="SM clock for the FP32 limit (default: the device's maximum)")
    args = p.parse_args(argv)
    if args.outdir is None:
        if not os.environ.get("OUT"):
            p.exit(2, "gpu_check: give an output folder or set OUT\n")
        args.outdir = Path(os.environ["OUT"])
    skip = {s for s in args.skip.split(",") if s}
    if skip - set(SECTIONS):
        p.exit(2, f"gpu_check: unknown section(s) {', '.join(sorted(skip - set(SECTIONS)))}; choose from {', '.join(SECTIONS)}\n")
    args.skip = skip
    return args


args = parse_args(sys.argv[1:])

import torch  # noqa: E402  (after the argument check, so that a bad call answers at once)

CUDA = torch.cuda.is_available()
if not CUDA:
    if not args.tiny:
        print("gpu_check: no CUDA device is visible to torch (run with --tiny to check the script on CPU)")
        sys.exit(2)
    os.environ["TRITON_INTERPRET"] = "1"  # before Triton is first imported

import numpy as np  # noqa: E402

from order_embedding import measures  # noqa: E402
from order_embedding.kernels import gpu  # noqa: E402
from order_embedding.loss import contrastive_loss  # noqa: E402
from order_embedding.model import ModelConfig, OrderEmbeddingModel  # noqa: E402
from order_embedding.optim import clip_gradients, make_optimizer  # noqa: E402

DEVICE = torch.device("cuda" if CUDA else "cpu")
if not CUDA:
    gpu.on_cuda = lambda *xs: True  # CPU tensors take the CUDA branches, through the interpreter
RESULTS: dict = {}
LOG: list[str] = []


def say(line: str = "") -> None:
    print(line, flush=True)
    LOG.append(line)


def sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median seconds of ``fn`` over ``repeats`` runs after ``warmup`` untimed ones (CUDA events on a GPU)."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        if CUDA:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def unit_rows(n: int, dim: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Random non-negative unit rows (absolute Gaussians, L2-normalised) made on the device, block by block."""
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    out = torch.empty((n, dim), dtype=dtype, device=DEVICE)
    step = 1 << 20
    for r0 in range(0, n, step):
        x = torch.randn((min(step, n - r0), dim), generator=g, device=DEVICE).abs_()
        out[r0 : r0 + len(x)] = x / x.norm(dim=1, keepdim=True)
    return out


def reference64(s: torch.Tensor, im: torch.Tensor) -> torch.Tensor:
    """The error matrix in float64 by broadcasting, a few images at a time."""
    s64 = s.double()
    out = torch.empty((s.shape[0], im.shape[0]), dtype=torch.float64, device=s.device)
    step = max(1, (1 << 27) // max(1, s.shape[0] * s.shape[1]))
    for b0 in range(0, im.shape[0], step):
        out[:, b0 : b0 + step] = measures.order_violation(s64.unsqueeze(1), im[b0 : b0 + step].double().unsqueeze(0))
    return out


def rel_error(x: torch.Tensor, ref: torch.Tensor) -> float:
    """||x - ref|| / ||ref|| (NaN never passes: a NaN anywhere gives NaN)."""
    return float((x.double() - ref).norm() / ref.norm())


def broadcast_errors(s: torch.Tensor, im: torch.Tensor) -> torch.Tensor:
    """The error matrix by plain torch broadcasting over a few caption rows at a time (no kernels)."""
    rows = max(1, (1 << 26) // max(1, im.shape[0] * im.shape[1]))
    return torch.cat([measures.order_violation(s[a : a + rows].unsqueeze(1), im.unsqueeze(0))
                      for a in range(0, s.shape[0], rows)])


# ------------------------------------------------------------------ the machine


def nvidia_smi(field: str) -> str | None:
    try:
        run = subprocess.run(["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    line = run.stdout.strip().splitlines()[0].strip() if run.returncode == 0 and run.stdout.strip() else ""
    return line or None


def fp32_lanes(major: int, minor: int) -> int:
    """FP32 lanes per SM: 64 on compute capability 6.0, 7.x and 8.0 (P100, V100, T4, A100), 128 on 8.6 and later."""
    return 64 if (major, minor) in ((6, 0), (8, 0)) or major == 7 else 128


def machine() -> dict:
    info: dict = {"torch": torch.__version__, "python": platform.python_version(), "device": str(DEVICE)}
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if not CUDA:
        info["gpu"] = None
        return info
    props = torch.cuda.get_device_properties(DEVICE)
    lanes = fp32_lanes(props.major, props.minor)
    smi_clock = nvidia_smi("clocks.max.sm")
    if args.gpu_clock_mhz:
        mhz, source = args.gpu_clock_mhz, "--gpu-clock-mhz"
    elif smi_clock and smi_clock.replace(".", "").isdigit():
        mhz, source = float(smi_clock), "nvidia-smi clocks.max.sm"
    elif getattr(props, "clock_rate", 0):
        mhz, source = props.clock_rate / 1000, "torch clock_rate"
    else:
        mhz, source = None, "unknown: pass --gpu-clock-mhz"
    info.update(gpu=props.name, driver=nvidia_smi("driver_version"), cuda_runtime=torch.version.cuda,
                capability=f"{props.major}.{props.minor}", sms=props.multi_processor_count, fp32_lanes_per_sm=lanes,
                memory_gib=round(props.total_memory / 2**30, 1), sm_clock_mhz=mhz, clock_source=source)
    if mhz:
        info["fp32_instructions_per_s"] = props.multi_processor_count * lanes * mhz * 1e6
        info["fp32_peak_flops"] = 2 * info["fp32_instructions_per_s"]
    source = torch.empty(1 << 28, dtype=torch.float32, device=DEVICE).uniform_()
    target = torch.empty_like(source)
    info["copy_bytes_per_s"] = 2 * source.numel() * 4 / timed(lambda: target.copy_(source), 10, 3)
    return info


# ------------------------------------------------------------------ sections


def section_tests() -> dict:
    env = dict(os.environ, ORDER_EMBEDDING_TEST_DEVICE="cuda", PYTHONPATH=str(ROOT / "src"))
    env.pop("TRITON_INTERPRET", None)
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow",
                          "tests/test_cuda_kernels.py"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=420)
    (args.outdir / "pytest.log").write_text(run.stdout + run.stderr)
    last = (run.stdout.strip().splitlines() or ["(no output)"])[-1]
    say(f"  pytest tests/test_cuda_kernels.py on the GPU: {last} ({time.perf_counter() - t0:.0f} s)")
    return {"returncode": run.returncode, "summary": last, "passed": run.returncode == 0}


def section_matrix(info: dict) -> dict:
    n, m, d, k = (130, 40, 32, 10) if args.tiny else (25000, 5000, 1024, 10)
    kernels = gpu.kernels()
    s, im = unit_rows(n, d, 1), unit_rows(m, d, 2)
    elements = n * m * d
    out: dict = {"captions": n, "images": m, "dim": d, "elements": elements}
    reps = 3 if args.tiny else 10
    out["triton_s"] = timed(lambda: kernels.order_error_matrix_cuda(s, im), reps)
    s16, im16 = s.half(), im.half()
    out["triton_float16_inputs_s"] = timed(lambda: kernels.order_error_matrix_cuda(s16, im16), reps)
    out["triton_top10_s"] = timed(lambda: kernels.order_topk_cuda(s, im, k), reps)
    out["broadcast_s"] = timed(lambda: broadcast_errors(s, im), 1 if not args.tiny else 2)
    out["broadcast_top10_s"] = timed(lambda: torch.topk(broadcast_errors(s, im), k, dim=1, largest=False), 1)
    few = min(256, n)
    ref = reference64(s[:few], im)
    e = kernels.order_error_matrix_cuda(s, im)
    out["relative_error_vs_float64"] = rel_error(e[:few], ref)
    out["relative_error_float16_inputs_vs_float64"] = rel_error(kernels.order_error_matrix_cuda(s16[:few], im16),
                                                                reference64(s16[:few], im16))
    _, top = kernels.order_topk_cuda(s[:few], im, k)
    ref_top = torch.sort(ref, dim=1, stable=True).indices[:, :k]
    out["top10_rows_equal_float64"] = int((top == ref_top).all(1).sum())
    out["top10_rows_checked"] = few
    if info.get("fp32_instructions_per_s"):
        out["fp32_limit_s"] = elements * 3 / info["fp32_instructions_per_s"]
        out["triton_over_limit"] = out["triton_s"] / out["fp32_limit_s"]
        out["top10_over_limit"] = out["triton_top10_s"] / out["fp32_limit_s"]
    if info.get("copy_bytes_per_s"):
        out["memory_floor_s"] = ((n + m) * d * 4 + n * m * 4) / info["copy_bytes_per_s"]
    out["speedup_over_broadcast"] = out["broadcast_s"] / out["triton_s"]
    say(f"  {n} x {m} x {d}: Triton {out['triton_s'] * 1e3:.2f} ms (float16 inputs "
        f"{out['triton_float16_inputs_s'] * 1e3:.2f} ms), top-{k} {out['triton_top10_s'] * 1e3:.2f} ms; "
        f"torch broadcasting {out['broadcast_s'] * 1e3:.1f} ms, + topk {out['broadcast_top10_s'] * 1e3:.1f} ms")
    if "fp32_limit_s" in out:
        say(f"  FP32 limit {out['fp32_limit_s'] * 1e3:.2f} ms (3 instructions per element): matrix at "
            f"{out['triton_over_limit']:.2f}x, top-{k} at {out['top10_over_limit']:.2f}x of it")
    say(f"  vs float64 on {few} captions: relative error {out['relative_error_vs_float64']:.2e} (float16 inputs "
        f"{out['relative_error_float16_inputs_vs_float64']:.2e}); top-{k} rows equal {out['top10_rows_equal_float64']}/{few}")
    return out


def paper_batch(config: ModelConfig, batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token ids (batch x longest, zero-padded), lengths (8 to 20 tokens) and image features, on the CPU."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(8, 21, (batch,), generator=g)
    tokens = torch.randint(2, config.n_words, (batch, int(lengths.max())), generator=g)
    tokens[torch.arange(tokens.shape[1])[None, :] >= lengths[:, None]] = 0
    images = torch.randn((batch, config.dim_image), generator=g)
    return tokens, lengths, images


def update(net: OrderEmbeddingModel, optimizer: torch.optim.Optimizer, batch: tuple, device: torch.device,
           vsepp: bool = False) -> torch.Tensor:
    """One training update as training does it: forward, the contrastive loss, backward, clipping, a step.

    Clipping is the original's per-tensor rule at norm 2 (training's default), or with
    ``vsepp`` one global norm of 2 (``clip_grad_norm_``, as VSE++ clips).
    """
    tokens, lengths, images = batch
    s, im = net(tokens.to(device), lengths, images.to(device, next(net.parameters()).dtype))
    loss = contrastive_loss(s, im, net.config.method, 0.05)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if vsepp:
        torch.nn.utils.clip_grad_norm_(net.parameters(), 2.0)
    else:
        clip_gradients(net, 2.0, "tensor")
    optimizer.step()
    return loss.detach()


def section_train() -> dict:
    if args.tiny:
        config, batch = ModelConfig(n_words=50, dim_word=8, dim=16, dim_image=32), 8
    else:
        config, batch = ModelConfig(n_words=10000, dim_word=300, dim=1024, dim_image=4096), 128
    torch.manual_seed(0)
    net = OrderEmbeddingModel(config).to(DEVICE)
    optimizer = make_optimizer("adam_original", [{"params": list(net.parameters())}], 2e-4)
    data = paper_batch(config, batch, 0)
    g = torch.Generator().manual_seed(1)
    s = torch.nn.functional.normalize(torch.randn(batch, config.dim, generator=g).abs(), dim=1).to(DEVICE)
    im = torch.nn.functional.normalize(torch.randn(batch, config.dim, generator=g).abs(), dim=1).to(DEVICE)
    out: dict = {"batch": batch, "dim": config.dim, "dim_word": config.dim_word, "dim_image": config.dim_image,
                 "n_words": config.n_words, "paths": {}}
    reps, warmup = (1, 1) if args.tiny else (30, 3)
    before = gpu.TRAINING_PATH
    for path in gpu.TRAINING_PATHS:
        gpu.use_training_path(path)
        row: dict = {}
        for mv in (False, True):
            def loss_step(mv: bool = mv) -> None:
                a, b = s.clone().requires_grad_(), im.clone().requires_grad_()
                contrastive_loss(a, b, "order", 0.05, mv).backward()
            row["loss_hardest_s" if mv else "loss_summed_s"] = timed(loss_step, reps, warmup)
        row["update_s"] = timed(lambda: update(net, optimizer, data, DEVICE), reps, warmup)
        row["loss_share"] = row["loss_summed_s"] / row["update_s"]
        out["paths"][path] = row
    # VSE++'s update: the broadcast loss, torch's Adam, one global clipping norm.
    gpu.use_training_path("broadcast")
    adam = torch.optim.Adam(net.parameters(), lr=2e-4)
    out["vsepp_update_s"] = timed(lambda: update(net, adam, data, DEVICE, vsepp=True), reps, warmup)
    gpu.use_training_path(before)
    base = out["paths"]["broadcast"]["update_s"]
    say(f"  VSE++'s update (broadcast loss, torch Adam, global clipping): {out['vsepp_update_s'] * 1e3:.2f} ms")
    for path, row in out["paths"].items():
        row["update_speedup_over_broadcast"] = base / row["update_s"]
        row["update_speedup_over_vsepp"] = out["vsepp_update_s"] / row["update_s"]
        say(f"  {path:9s}: update {row['update_s'] * 1e3:7.2f} ms ({row['update_speedup_over_broadcast']:.2f}x the "
            f"broadcast update, {row['update_speedup_over_vsepp']:.2f}x VSE++'s); loss fwd+bwd summed "
            f"{row['loss_summed_s'] * 1e3:.3f} ms, hardest {row['loss_hardest_s'] * 1e3:.3f} ms; "
            f"loss share {100 * row['loss_share']:.1f}%")
    out["fastest"] = min(out["paths"], key=lambda p: out["paths"][p]["update_s"])
    return out


def run_updates(device: torch.device, path: str | None, steps: int, config: ModelConfig, batch: int,
                state: dict, dtype: torch.dtype = torch.float32) -> tuple[list[float], dict]:
    """Losses of ``steps`` SGD updates from ``state`` and the final weights (on the CPU, as float64).

    ``path`` None is the CPU reference: its tensors keep the CPU paths, also in --tiny without a GPU.
    """
    net = OrderEmbeddingModel(config)
    net.load_state_dict(state)
    net.to(device, dtype)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
    before = gpu.TRAINING_PATH
    if path is not None:
        gpu.use_training_path(path)
    on_cuda = gpu.on_cuda
    if path is None:
        gpu.on_cuda = lambda *xs: False
    try:
        losses = [float(update(net, optimizer, paper_batch(config, batch, 100 + i), device)) for i in range(steps)]
    finally:
        gpu.on_cuda = on_cuda
        gpu.use_training_path(before)
    return losses, {k: v.detach().cpu().double() for k, v in net.state_dict().items()}


def section_match() -> dict:
    config, batch, steps = ModelConfig(n_words=200, dim_word=16, dim=32, dim_image=48), 16, 20
    torch.manual_seed(3)
    state = OrderEmbeddingModel(config).state_dict()
    cudnn_tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # float32 arithmetic on both sides
    try:
        cpu_losses, cpu_state = run_updates(torch.device("cpu"), None, steps, config, batch, state)
        # The float32 rounding of the CPU run itself: the same updates in float64.
        _, exact = run_updates(torch.device("cpu"), None, steps, config, batch, state, torch.float64)
        noise = max(float((cpu_state[k] - exact[k]).abs().max()) for k in cpu_state)
        scale = max(float(v.abs().max()) for v in cpu_state.values())
        moved = max(float((cpu_state[k] - state[k].double()).abs().max()) for k in cpu_state)
        out: dict = {"steps": steps, "batch": batch, "dim": config.dim, "cpu_float32_vs_float64": noise,
                     "max_weight": scale, "max_weight_change": moved, "paths": {}}
        say(f"  CPU float32 against float64 after {steps} updates: max |weight difference| {noise:.2e} "
            f"(weights up to {scale:.2f}, moved up to {moved:.2e})")
        for path in gpu.TRAINING_PATHS:
            losses, weights = run_updates(DEVICE, path, steps, config, batch, state)
            diff = max(float((weights[k] - cpu_state[k]).abs().max()) for k in cpu_state)
            loss_diff = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(losses, cpu_losses))
            # Float32 tolerance: within a few times the CPU's own float32 error over the same updates.
            ok = diff <= max(4 * noise, 1e-6 * scale)
            out["paths"][path] = {"max_weight_diff": diff, "max_loss_rel_diff": loss_diff, "passed": ok}
            say(f"  {path:9s}: CUDA against CPU float32: max |weight difference| {diff:.2e}, losses within "
                f"{loss_diff:.2e} relative: {'pass' if ok else 'FAIL'}")
    finally:
        torch.backends.cudnn.allow_tf32 = cudnn_tf32
    out["cpu_losses"] = cpu_losses
    return out


def section_search() -> dict:
    n_images, n_queries, dim, k, few = (700, 4, 32, 10, 3) if args.tiny else (10_000_000, 100, 1024, 10, 5)
    kernels = gpu.kernels()
    out: dict = {"images": n_images, "queries": n_queries, "dim": dim, "k": k}
    t0 = time.perf_counter()
    images = unit_rows(n_images, dim, 4, torch.float16)
    packed = kernels.Packed(n_images, dim, torch.float16, DEVICE)
    packed.write(0, images)
    sync()
    out["generate_and_pack_s"] = time.perf_counter() - t0
    queries = unit_rows(n_queries, dim, 5)
    err, idx = gpu.device_topk(queries, packed, k, measures.order_errors)
    out["search_s"] = timed(lambda: gpu.device_topk(queries, packed, k, measures.order_errors), 1 if args.tiny else 5)
    scan_err, scan_idx = gpu.device_topk(queries, images, k, measures.order_errors)
    out["full_scan_s"] = timed(lambda: gpu.device_topk(queries, images, k, measures.order_errors), 1)
    out["equal_to_full_scan"] = bool(torch.equal(idx, scan_idx) and torch.equal(err, scan_err))
    ref = reference64(queries[:few], images)
    ref_top = torch.sort(ref, dim=1, stable=True).indices[:, :k]
    out["float64_queries"] = few
    out["float64_rows_equal"] = int((idx[:few] == ref_top).all(1).sum())
    out["float64_max_rel_error"] = float(((err[:few].double() - ref.gather(1, idx[:few])).abs()
                                          / ref.gather(1, idx[:few]).abs().clamp_min(1e-30)).max())
    del ref
    # Streamed from host memory: what an index too large for the GPU costs per image.
    part = min(n_images, 1_000_000)
    host = images[:part].cpu().numpy()
    streamed = measures.exact_topk(queries.cpu().numpy(), host, "order", k, device=DEVICE) if CUDA else None
    if CUDA:
        out["streamed_images"] = part
        out["streamed_s"] = timed(lambda: measures.exact_topk(queries.cpu().numpy(), host, "order", k, device=DEVICE), 2)
        sub_err, sub_idx = gpu.device_topk(queries, images[:part], k, measures.order_errors)
        out["streamed_equal"] = bool(np.array_equal(streamed[1], sub_idx.cpu().numpy()))
    floor = None
    if RESULTS.get("machine", {}).get("fp32_instructions_per_s"):
        floor = n_queries * n_images * dim * 3 / RESULTS["machine"]["fp32_instructions_per_s"]
        out["fp32_limit_s"] = floor
    say(f"  {n_queries} queries over {n_images:,} x {dim} float16 images held packed on the device: top-{k} in "
        f"{out['search_s'] * 1e3:.1f} ms" + (f" (FP32 limit {floor * 1e3:.1f} ms)" if floor else "")
        + f"; full scan by the separate path {out['full_scan_s'] * 1e3:.1f} ms, equal: {out['equal_to_full_scan']}")
    say(f"  vs float64 on {few} queries: {out['float64_rows_equal']}/{few} top-{k} lists equal, errors within "
        f"{out['float64_max_rel_error']:.1e} relative")
    if CUDA:
        say(f"  streamed from host memory: {part:,} images in {out['streamed_s'] * 1e3:.1f} ms "
            f"({part * dim * 2 / out['streamed_s'] / 1e9:.1f} GB/s), equal to the held search: {out['streamed_equal']}")
    return out


def summary() -> None:
    say()
    say("summary (targets of the project's GPU issue)")
    m, t, s, mt = (RESULTS.get(x) for x in ("matrix", "train", "search", "match"))
    if isinstance(RESULTS.get("tests"), dict):
        say(f"  CUDA tests on the GPU: {RESULTS['tests']['summary']}")
    if isinstance(m, dict) and "triton_over_limit" in m:
        say(f"  5K error matrix {m['triton_over_limit']:.2f}x, top-10 {m['top10_over_limit']:.2f}x the FP32 limit "
            f"(target <= 2x); {m['speedup_over_broadcast']:.0f}x faster than torch broadcasting")
    if isinstance(t, dict):
        best = t["paths"][t["fastest"]]
        say(f"  training update: fastest path '{t['fastest']}' at {best['update_speedup_over_broadcast']:.2f}x the "
            f"broadcast update (target >= 1.5x); loss share {100 * best['loss_share']:.1f}%")
    if isinstance(mt, dict):
        say("  20 updates CUDA vs CPU: " + ", ".join(f"{p} {'pass' if r['passed'] else 'FAIL'}"
                                                     for p, r in mt["paths"].items()))
    if isinstance(s, dict):
        say(f"  search {s['queries']} queries x {s['images']:,} images: {s['search_s']:.3f} s (target <= 0.25 s), "
            f"equal to the full scan: {s['equal_to_full_scan']}")


def main() -> int:
    args.outdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    info = machine()
    RESULTS["machine"] = info
    say(f"gpu_check: {info.get('gpu') or 'no GPU (CPU, Triton interpreter)'}; driver {info.get('driver')}; "
        f"torch {info['torch']} (CUDA {info.get('cuda_runtime')}); Triton {info['triton']}")
    if CUDA:
        say(f"  {info['sms']} SMs x {info['fp32_lanes_per_sm']} FP32 lanes x {info['sm_clock_mhz']} MHz "
            f"({info['clock_source']}); copy bandwidth {info['copy_bytes_per_s'] / 1e12:.2f} TB/s")
    sections: dict[str, Callable[[], dict]] = {
        "tests": section_tests, "matrix": lambda: section_matrix(info), "train": section_train,
        "match": section_match, "search": section_search}
    failed = False
    for name, run in sections.items():
        if name in args.skip or (name == "tests" and args.tiny):
            RESULTS[name] = "skipped"
            continue
        say(f"[{name}]")
        t0 = time.perf_counter()
        try:
            RESULTS[name] = run()
            RESULTS[name]["section_s"] = time.perf_counter() - t0
        except Exception as error:  # one section's failure must not cost the others' figures
            failed = True
            RESULTS[name] = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
            say(f"  FAILED: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
        if CUDA:
            torch.cuda.empty_cache()
        (args.outdir / "gpu_check.json").write_text(json.dumps(RESULTS, indent=1, default=str))
    summary()
    RESULTS["total_s"] = time.perf_counter() - started
    say(f"total {RESULTS['total_s']:.0f} s; results in {args.outdir}")
    (args.outdir / "gpu_check.json").write_text(json.dumps(RESULTS, indent=1, default=str))
    (args.outdir / "gpu_check.log").write_text("\n".join(LOG) + "\n")
    tests_failed = isinstance(RESULTS.get("tests"), dict) and not RESULTS["tests"].get("passed", True)
    match_failed = isinstance(RESULTS.get("match"), dict) and not all(
        r["passed"] for r in RESULTS["match"].get("paths", {}).values())
    return 1 if failed or tests_failed or match_failed else 0


if __name__ == "__main__":
    sys.exit(main())
