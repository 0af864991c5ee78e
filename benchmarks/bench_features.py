"""Throughput of CNN feature extraction: images per second for VGG19 (fc7) and ResNet-152 (pool).

Two measurements, with random weights (they cost the same as pretrained ones):

- the network alone on ready 224x224 crops, for each batch size (default 1, 8, 32,
  64), on the CPU (float32) and, where CUDA is present, on the GPU in float32 and in
  float16 mixed precision (autocast, channels-last). Figures are crops/s, that is
  images/s for ``--crops 1``; the 10-crop protocol costs ten crops per image;
- the whole ``extract-features`` pipeline (JPEG decoding in DataLoader workers,
  resize, crops, network, memory-mapped writes) on ``--pipeline-images`` generated
  500x375 JPEGs, in images/s, for each network at ``--pipeline-batch``.

Usage: python benchmarks/bench_features.py [--cnns vgg19 resnet152] [--batch-sizes 1 8 32 64]
       [--devices cpu cuda] [--seconds 3] [--pipeline-images 64] [--crops 10] [--workers 4] [--threads N]
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from order_embedding.vision import features


def crops_per_second(net: torch.nn.Module, batch: int, device: torch.device, amp: bool, seconds: float) -> float:
    """Forward passes of ``batch`` random 224x224 crops for about ``seconds`` (after one warm-up pass)."""
    torch.backends.cudnn.benchmark = True
    x = torch.randn(batch, 3, 224, 224, device=device)
    if amp:
        x = x.to(memory_format=torch.channels_last)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step() -> None:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            net(x)

    step()
    sync()
    n, start = 0, time.perf_counter()
    while True:
        step()
        n += 1
        sync()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds or (n >= 3 and elapsed >= seconds / 3 and batch * n >= 256):
            return batch * n / elapsed


def network_table(cnns: list[str], batch_sizes: list[int], devices: list[str], seconds: float) -> None:
    print("network alone, 224x224 crops/s (images/s at 1 crop; divide by 10 for the 10-crop protocol)")
    modes = [(d, amp) for d in devices for amp in ((False, True) if d == "cuda" else (False,))]
    header = f"{'cnn':<10} {'device':<12}" + "".join(f"{'bs ' + str(b):>10}" for b in batch_sizes)
    print(header)
    print("-" * len(header))
    for cnn in cnns:
        for dev_name, amp in modes:
            device = torch.device(dev_name)
            net = features.build_extractor(cnn, "none").net.to(device).eval()
            if amp:
                net = net.to(memory_format=torch.channels_last)
            row = [crops_per_second(net, b, device, amp, seconds) for b in batch_sizes]
            label = f"{dev_name}{' fp16' if amp else ' fp32'}"
            print(f"{cnn:<10} {label:<12}" + "".join(f"{v:>10.1f}" for v in row), flush=True)
            del net
            if device.type == "cuda":
                torch.cuda.empty_cache()


def pipeline_table(cnns: list[str], n_images: int, batch: int, crops: int, workers: int, device: str,
                   amp: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rng = np.random.default_rng(0)
        files = []
        for i in range(n_images):
            pixels = rng.integers(0, 256, (375 // 8, 500 // 8, 3), dtype=np.uint8)
            img = Image.fromarray(pixels).resize((500, 375), Image.BILINEAR)
            img.save(root / f"im{i}.jpg", quality=90)
            files.append(root / f"im{i}.jpg")
        print(f"\nwhole pipeline: {n_images} JPEGs of 500x375, {crops} crop(s), batch {batch}, {workers} worker(s), "
              f"{device}{' fp16' if amp else ''}")
        for cnn in cnns:
            ex = features.build_extractor(cnn, "none")
            settings = {"cnn": cnn, "crops": crops}
            start = time.perf_counter()
            features.extract_split(ex, files, root / f"{cnn}.npy", crops, settings, batch, workers,
                                   torch.device(device), amp, verbose=False)
            elapsed = time.perf_counter() - start
            print(f"{cnn:<10} {n_images / elapsed:8.2f} images/s ({elapsed:.1f} s)", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cnns", nargs="+", default=["vgg19", "resnet152"], choices=features.CNNS[:-1])
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8, 32, 64])
    p.add_argument("--devices", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    p.add_argument("--seconds", type=float, default=3.0, help="timing length per cell")
    p.add_argument("--pipeline-images", type=int, default=64, help="0 skips the whole-pipeline measurement")
    p.add_argument("--pipeline-batch", type=int, default=32)
    p.add_argument("--crops", type=int, default=10, choices=(1, 10))
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s), "
          f"{torch.get_num_threads()} torch thread(s)" + (f", GPU {torch.cuda.get_device_name()}" if cuda else ""))
    network_table(args.cnns, args.batch_sizes, args.devices, args.seconds)
    if args.pipeline_images:
        device = "cuda" if cuda and "cuda" in args.devices else "cpu"
        pipeline_table(args.cnns, args.pipeline_images, args.pipeline_batch, args.crops, args.workers, device,
                       amp=device == "cuda")


if __name__ == "__main__":
    main()
