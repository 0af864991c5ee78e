"""Shared fixtures: a tiny learnable dataset in the original layout; skips for missing system packages."""
from pathlib import Path

import numpy as np
import pytest
import torch

WORDS = ["red", "green", "blue", "round", "square", "big", "small", "tall"]


def write_tiny_dataset(root: Path, n_train: int = 60, n_dev: int = 20, n_test: int = 20, dim_image: int = 16,
                       seed: int = 0) -> Path:
    """Images are noisy copies of 8 class centroids; each caption names its class's two words."""
    rng = np.random.default_rng(seed)
    centroids = rng.normal(size=(8, dim_image))
    (root / "images" / "10crop").mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("dev", n_dev), ("test", n_test)):
        classes = rng.integers(0, 8, n)
        feats = centroids[classes] + 0.3 * rng.normal(size=(n, dim_image))
        feats /= np.linalg.norm(feats, axis=1, keepdims=True)
        np.save(root / "images" / "10crop" / f"{split}.npy", feats.astype(np.float32))
        lines = []
        for c in classes:
            a, b = WORDS[c], WORDS[(c + 3) % 8]
            lines += [f"a {a} {b} thing", f"the {a} and {b} one", f"{a} {b}", f"something {a} {b}", f"a {b} {a} object"]
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    return write_tiny_dataset(tmp_path / "tiny")


TINY_MODEL = dict(dim=12, dim_word=8, dim_image=16, batch_size=16, dispFreq=1, validFreq=4, verbose=False)
#: The same tiny model as command-line flags.
TINY_FLAGS = ["--dim", "12", "--dim_word", "8", "--dim_image", "16", "--batch_size", "16", "--validFreq", "4", "--quiet"]


def train_tiny_run(root: Path, max_epochs: int) -> tuple[Path, Path]:
    """A tiny data set under ``root/data`` and one run trained on it through the command line,
    ``root/runs/r``: ``(data folder, run folder)``."""
    from order_embedding.cli import main

    data = write_tiny_dataset(root / "data")
    assert main(["train", "--data", str(data), "--save_dir", str(root / "runs"), "--name", "r",
                 "--max_epochs", str(max_epochs), *TINY_FLAGS]) == 0
    return data, root / "runs" / "r"


@pytest.fixture
def one_torch_thread():
    """Single-threaded torch: small convolutions run far faster so on a busy 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


#: Debian packages some tests need, each with the file of it that the tests use.
SYSTEM_PACKAGES = {
    "chromium": Path("/usr/bin/chromium"),
    "chromium-driver": Path("/usr/bin/chromedriver"),
    "wordnet-base": Path("/usr/share/wordnet/data.noun"),
}
_missing_seen: set[str] = set()


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "system_packages(*names): needs these Debian packages; skipped without them")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item) -> None:
    marker = item.get_closest_marker("system_packages")
    if marker is None:
        return
    missing = [name for name in marker.args if not SYSTEM_PACKAGES[name].exists()]
    if missing:
        _missing_seen.update(missing)
        pytest.skip(f"needs the Debian package(s) {' '.join(missing)}: apt-get install {' '.join(missing)}")


def pytest_terminal_summary(terminalreporter) -> None:
    if _missing_seen:
        names = " ".join(sorted(_missing_seen))
        terminalreporter.write_line(f"skipped the tests that need the missing Debian package(s) {names} "
                                    f"(as root: apt-get install {names}, or make test)")
