"""Caption-image data splits in the three common layouts.

``load_split(path, split)`` detects the layout of the folder ``path``:

- original (Vendrov et al.): ``{split}.txt``, one tokenised caption per line, with
  features ``images/{cnn}/{split}.npy``; the captions of image ``i`` are lines
  ``k*i .. k*i+k-1`` (``k`` = 5 in the original release), or an optional
  ``{split}_cap2img.txt`` gives the image index of every caption line. An optional
  ``{split}_images.txt`` lists one image file per feature row (for pixel models);
  a split needs the features, the image list or both.
- VSE++ precomputed: ``{split}_caps.txt`` with ``{split}_ims.npy``; image rows may
  be repeated once per caption, which is detected and undone.
- Karpathy: ``dataset_*.json`` (``path`` may also be that file), with optional
  features of all its images in JSON order at ``images/{cnn}/{json stem}.npy``.

Split names: ``train`` (Karpathy ``restval`` included), ``dev`` (a file or split
named ``val`` or ``dev``), ``test``, or any other name used literally.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .. import runs
from ..options import DEFAULTS

DATA_ENV = "ORDER_EMBEDDING_DATA"
DEFAULT_DATA_ROOT = "./data"
_SCAN_ROWS = 65536
#: Largest Karpathy ``dataset_*.json`` read (COCO's is about 150 MB).
MAX_KARPATHY_BYTES = 2**30


#: How far a feature row's L2 norm may be from 1 before :func:`warn_unnormalised` warns.
NORM_TOLERANCE = 1e-3


#: Images per test fold of the COCO 1K protocol (and of the dev fold validation scores).
FOLD_SIZE = 1000


class DataError(ValueError):
    """A data folder or one of its files is missing, malformed or inconsistent."""


class InputWarning(UserWarning):
    """Input that is accepted but is probably not what the model expects."""


@dataclass(eq=False)
class Split:
    """Captions of a split, the image of each caption, and the images as features and/or files.

    ``cap2img[c]`` is the image row of caption ``c``. ``features`` is float32
    ``n_images x dim_image`` (possibly a copy-on-write memory map of the file) or None;
    ``image_files`` lists one path per image (relative to ``image_root``) or is None.
    """

    name: str
    captions: list[str]
    cap2img: np.ndarray
    features: np.ndarray | None = None
    image_files: list[str] | None = None
    image_root: str | None = None

    def __post_init__(self) -> None:
        self.cap2img = np.asarray(self.cap2img)
        if self.cap2img.ndim != 1 or (self.cap2img.size and not np.issubdtype(self.cap2img.dtype, np.integer)):
            raise DataError(f"split {self.name!r}: cap2img must be a 1-D integer array")
        self.cap2img = self.cap2img.astype(np.int64, copy=False)
        if len(self.captions) != self.cap2img.size:
            raise DataError(
                f"split {self.name!r}: {len(self.captions)} captions but {self.cap2img.size} cap2img entries"
            )
        if self.features is not None and self.features.ndim != 2:
            raise DataError(f"split {self.name!r}: features must be 2-D, got shape {self.features.shape}")
        if self.features is not None and self.image_files is not None and len(self.features) != len(self.image_files):
            raise DataError(
                f"split {self.name!r}: {len(self.features)} feature rows but {len(self.image_files)} image files"
            )
        n = self.n_images
        if self.cap2img.size and (self.cap2img.min() < 0 or self.cap2img.max() >= n):
            bad = int(np.flatnonzero((self.cap2img < 0) | (self.cap2img >= n))[0])
            raise DataError(
                f"split {self.name!r}: caption {bad} points to image {self.cap2img[bad]}, outside 0..{n - 1}"
            )

    @property
    def n_images(self) -> int:
        """Number of images (feature rows or image files; without either, the largest cap2img + 1)."""
        if self.features is not None:
            return int(self.features.shape[0])
        if self.image_files is not None:
            return len(self.image_files)
        return int(self.cap2img.max()) + 1 if self.cap2img.size else 0

    @property
    def n_captions(self) -> int:
        """Number of captions."""
        return len(self.captions)

    def subset(self, image_indices: Sequence[int] | np.ndarray) -> Split:
        """The given images (in the given order) and their captions (in caption order), reindexed."""
        idx = np.asarray(image_indices, dtype=np.int64).reshape(-1)
        n = self.n_images
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise DataError(f"split {self.name!r}: image indices must lie in 0..{n - 1}")
        if np.unique(idx).size != idx.size:
            raise DataError(f"split {self.name!r}: image indices of a subset must be distinct")
        pos = np.full(n, -1, dtype=np.int64)
        pos[idx] = np.arange(idx.size)
        new = pos[self.cap2img]
        keep = np.flatnonzero(new >= 0)
        contiguous = idx.size > 0 and bool(np.all(np.diff(idx) == 1))
        rows = slice(int(idx[0]), int(idx[-1]) + 1) if contiguous else idx
        return Split(
            name=self.name,
            captions=[self.captions[i] for i in keep],
            cap2img=new[keep],
            features=None if self.features is None else self.features[rows],
            image_files=None if self.image_files is None else [self.image_files[i] for i in idx],
            image_root=self.image_root,
        )

    def fold(self, k: int, size: int = FOLD_SIZE) -> Split:
        """Images ``size*k .. size*k+size-1`` (fewer if the split ends first) and their captions: COCO 1K protocol."""
        if k < 0 or size < 1 or size * k >= self.n_images:
            raise DataError(
                f"split {self.name!r} has {self.n_images} images: no fold {k} of size {size}"
            )
        start = size * k
        return self.subset(np.arange(start, min(start + size, self.n_images)))


def resolve_data_dir(data: str | os.PathLike) -> Path:
    """``data`` if it exists, otherwise ``$ORDER_EMBEDDING_DATA/<data>`` (root ``./data`` by default)."""
    direct = Path(data)
    if direct.exists():
        return direct
    under = Path(os.environ.get(DATA_ENV, DEFAULT_DATA_ROOT)) / data
    if under.exists():
        return under
    raise DataError(f"data {str(data)!r} not found: neither {direct} nor {under} exists (set ${DATA_ENV} for the data root)")


def load_split(
    path: str | os.PathLike, split: str, cnn: str = DEFAULTS["cnn"], image_root: str | os.PathLike | None = None
) -> Split:
    """Load one split from a data folder (or Karpathy JSON file), detecting its layout.

    ``path`` goes through :func:`resolve_data_dir`. ``image_root`` is the folder the
    image files are relative to (default: the data folder). Bad or inconsistent data
    raises :class:`DataError`.
    """
    root = resolve_data_dir(path)
    if root.is_file():
        if root.suffix == ".json":
            return _load_karpathy(root, split, cnn, image_root)
        raise DataError(f"{root}: expected a data folder or a Karpathy dataset_*.json file")
    names = _aliases(split)
    for name in names:
        if (root / f"{name}.txt").is_file():
            return _load_original(root, name, split, cnn, image_root)
    for name in names:
        if (root / f"{name}_caps.txt").is_file():
            return _load_precomp(root, name, split)
    jsons = sorted(root.glob("dataset_*.json"))
    if len(jsons) == 1:
        return _load_karpathy(jsons[0], split, cnn, image_root)
    if len(jsons) > 1:
        raise DataError(f"{root}: several Karpathy files ({', '.join(p.name for p in jsons)}); pass one of them")
    looked = [f"{n}.txt" for n in names] + [f"{n}_caps.txt" for n in names] + ["dataset_*.json"]
    raise DataError(f"{root}: no data for split {split!r} (looked for {', '.join(looked)})")


def _aliases(split: str) -> list[str]:
    """File stems that may hold ``split``: ``dev`` and ``val`` stand for each other."""
    if split in ("dev", "val"):
        return [split, "val" if split == "dev" else "dev"]
    return [split]


def _read_lines(path: Path, what: str) -> list[str]:
    """Non-empty stripped lines of a UTF-8 text file (one item per line); a byte-order mark is dropped."""
    out = []
    try:
        for i, raw in enumerate(runs.iter_lines(path, "text file"), start=1):
            if i == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise DataError(f"{path}: line {i} is not valid UTF-8") from None
            if not line:
                raise DataError(f"{path}: line {i} is an empty {what}")
            out.append(line)
    except runs.RunError as e:
        raise DataError(str(e)) from None
    return out


def load_karpathy_json(path: Path) -> dict:
    """A Karpathy ``dataset_*.json`` file: a JSON object with a list ``"images"`` (at most
    :data:`MAX_KARPATHY_BYTES`); anything else raises :class:`DataError` naming the file."""
    try:
        data = runs.load_json(path, MAX_KARPATHY_BYTES)
    except runs.RunError as e:
        raise DataError(str(e)) from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{path}: expected a JSON object with a list \"images\"")
    return data


def open_features(path: str | os.PathLike) -> np.ndarray:
    """The array of an ``.npy`` file as a copy-on-write memory map (rows read lazily, writes never reach the
    file); a file that is not regular, not an ``.npy`` array or truncated raises :class:`DataError` naming it."""
    try:
        os.close(runs.open_regular(path, "feature file"))  # a FIFO or device is refused, not mapped
        arr = np.load(path, mmap_mode="c", allow_pickle=False)
    except runs.RunError as e:
        raise DataError(str(e)) from None
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable .npy array ({_npy_problem(e)})") from None
    if not isinstance(arr, np.ndarray):
        raise DataError(f"{path}: expected one .npy array")
    return arr


def _load_features(path: Path) -> np.ndarray:
    """Float32 ``n x d`` features of an .npy file, checked to be finite."""
    arr = open_features(path)
    if arr.ndim != 2:
        raise DataError(f"{path}: features must be 2-D (images x dims), got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise DataError(f"{path}: features must be numbers, got dtype {arr.dtype}")
    if arr.dtype != np.float32:
        with np.errstate(over="ignore"):
            arr = np.asarray(arr, dtype=np.float32)
    _check_finite(arr, path)
    return arr


def _npy_problem(error: BaseException) -> str:
    """numpy's reason for refusing an ``.npy`` file, in the words of this project where numpy's are obscure."""
    if "mmap length is greater than file size" in str(error):
        return "the file is shorter than its header says: truncated"
    return str(error)


def _check_finite(arr: np.ndarray, path: Path) -> None:
    """Raise naming ``path`` and the number of rows with NaN or infinite values; warn about rows that are
    not L2-normalised (:func:`warn_unnormalised`)."""
    n = arr.shape[0]
    bad = off = 0
    starts = range(0, n, _SCAN_ROWS)
    for start in tqdm(starts, desc=f"checking {path.name}", unit="chunk", leave=False, disable=len(starts) < 8):
        chunk = np.asarray(arr[start : start + _SCAN_ROWS])
        bad += int((~np.isfinite(chunk)).any(axis=1).sum())
        off += _unnormalised_rows(chunk)
    if bad:
        raise DataError(f"{path}: {bad} of {n} feature rows contain NaN or infinite values")
    _warn(off, n, str(path))


def _unnormalised_rows(rows: np.ndarray) -> int:
    """How many rows have an L2 norm further than :data:`NORM_TOLERANCE` from 1 (all-zero rows, which stand for
    unreadable images, not counted)."""
    norms = np.linalg.norm(np.asarray(rows, dtype=np.float64), axis=1)
    return int(((norms > 0) & (np.abs(norms - 1) > NORM_TOLERANCE)).sum())


def _warn(off: int, n: int, source: str) -> None:
    if off:
        warnings.warn(f"{source}: {off} of {n} feature rows are not L2-normalised; the model expects unit rows "
                      "(as extract-features writes them)", InputWarning, stacklevel=3)


def warn_unnormalised(features: np.ndarray, source: str = "features") -> None:
    """One :class:`InputWarning` line when feature rows are not L2-normalised (they are used as given)."""
    _warn(sum(_unnormalised_rows(features[i : i + _SCAN_ROWS]) for i in range(0, len(features), _SCAN_ROWS)),
          len(features), source)


def _multiple(n_caps: int, n_rows: int, caps_path: Path, rows_path: Path) -> np.ndarray:
    """cap2img when every image has the same number of consecutive captions."""
    if n_rows == 0 or n_caps % n_rows != 0:
        raise DataError(
            f"{caps_path} has {n_caps} captions and {rows_path} has {n_rows} images: "
            "captions must be a whole multiple of images"
        )
    return np.arange(n_caps, dtype=np.int64) // (n_caps // n_rows)


def _load_original(root: Path, stem: str, split: str, cnn: str, image_root: str | os.PathLike | None) -> Split:
    caps_path = root / f"{stem}.txt"
    captions = _read_lines(caps_path, "caption")
    feat_path = next((p for p in (root / "images" / cnn / f"{n}.npy" for n in _aliases(stem)) if p.is_file()), None)
    files_path = root / f"{stem}_images.txt"
    if feat_path is None and not files_path.is_file():
        raise DataError(
            f"{caps_path}: no images for split {split!r} (looked for "
            f"{root / 'images' / cnn / (stem + '.npy')} and {files_path})"
        )
    features = _load_features(feat_path) if feat_path is not None else None
    image_files = _read_lines(files_path, "image path") if files_path.is_file() else None
    if features is not None and image_files is not None and len(features) != len(image_files):
        raise DataError(
            f"{feat_path} has {len(features)} images but {files_path} lists {len(image_files)}"
        )
    n_images = len(features) if features is not None else len(image_files)  # type: ignore[arg-type]
    rows_path = feat_path if feat_path is not None else files_path
    c2i_path = root / f"{stem}_cap2img.txt"
    if c2i_path.is_file():
        cap2img = _read_cap2img(c2i_path, len(captions), n_images, caps_path)
    else:
        cap2img = _multiple(len(captions), n_images, caps_path, rows_path)
    return Split(
        name=split,
        captions=captions,
        cap2img=cap2img,
        features=features,
        image_files=image_files,
        image_root=str(image_root if image_root is not None else root),
    )


def _read_cap2img(path: Path, n_caps: int, n_images: int, caps_path: Path) -> np.ndarray:
    lines = _read_lines(path, "image index")
    if len(lines) != n_caps:
        raise DataError(f"{caps_path} has {n_caps} captions but {path} has {len(lines)} image indices")
    out = np.empty(n_caps, dtype=np.int64)
    for i, line in enumerate(lines):
        try:
            out[i] = int(line)
        except ValueError:
            raise DataError(f"{path}: line {i + 1} is {line!r}, not an image index") from None
        if not 0 <= out[i] < n_images:
            raise DataError(f"{path}: line {i + 1} points to image {out[i]}, outside 0..{n_images - 1}")
    return out


def _load_precomp(root: Path, stem: str, split: str) -> Split:
    caps_path = root / f"{stem}_caps.txt"
    ims_path = next((p for p in (root / f"{n}_ims.npy" for n in _aliases(stem)) if p.is_file()), None)
    if ims_path is None:
        raise DataError(f"{caps_path}: image features {root / (stem + '_ims.npy')} not found")
    captions = _read_lines(caps_path, "caption")
    features = _load_features(ims_path)
    n_caps, n_rows = len(captions), len(features)
    k = _repeat_factor(features) if n_caps == n_rows else 1
    if k > 1:
        features = features[::k]
        cap2img = np.arange(n_caps, dtype=np.int64) // k
    else:
        cap2img = _multiple(n_caps, n_rows, caps_path, ims_path)
    return Split(name=split, captions=captions, cap2img=cap2img, features=features)


def _repeat_factor(features: np.ndarray) -> int:
    """``k`` when every group of ``k`` consecutive rows is identical (images stored once per caption), else 1."""
    n = len(features)
    k = 1
    while k < n and np.array_equal(features[k], features[0]):
        k += 1
    if k == 1 or n % k != 0:
        return 1
    groups = _SCAN_ROWS // k + 1
    for g in range(0, n // k, groups):
        block = np.asarray(features[g * k : (g + groups) * k])
        block = block.reshape(-1, k, features.shape[1])
        if not np.array_equal(block, np.broadcast_to(block[:, :1], block.shape)):
            return 1
    return k


def _karpathy_splits(split: str) -> set[str]:
    if split == "train":
        return {"train", "restval"}
    if split in ("dev", "val"):
        return {"val", "dev"}
    return {split}


def _load_karpathy(json_path: Path, split: str, cnn: str, image_root: str | os.PathLike | None) -> Split:
    images = load_karpathy_json(json_path)["images"]
    wanted = _karpathy_splits(split)
    rows: list[int] = []
    captions: list[str] = []
    cap2img: list[int] = []
    files: list[str] = []
    for i, im in enumerate(images):
        if not isinstance(im, dict) or not isinstance(im.get("split"), str):
            raise DataError(f"{json_path}: image {i} has no \"split\" string")
        if im["split"] not in wanted:
            continue
        sents = im.get("sentences")
        if not isinstance(sents, list) or not isinstance(im.get("filename"), str) or not im["filename"]:
            raise DataError(f"{json_path}: image {i} needs a \"filename\" and a list of \"sentences\"")
        fp = im.get("filepath")
        if fp is not None and not isinstance(fp, str):
            raise DataError(f"{json_path}: image {i} has a \"filepath\" that is not a string")
        for j, s in enumerate(sents):
            toks = s.get("tokens") if isinstance(s, dict) else None
            if not isinstance(toks, list) or not all(isinstance(t, str) for t in toks):
                raise DataError(f"{json_path}: image {i} sentence {j} has no list of \"tokens\"")
            caption = " ".join(t.strip() for t in toks if t.strip())
            if not caption:
                raise DataError(f"{json_path}: image {i} sentence {j} is an empty caption")
            captions.append(caption)
            cap2img.append(len(rows))
        rows.append(i)
        files.append(f"{fp}/{im['filename']}" if fp else im["filename"])
    if not rows:
        present = sorted({im["split"] for im in images})
        raise DataError(f"{json_path}: no images in split {split!r} (splits present: {', '.join(present)})")
    feat_path = json_path.parent / "images" / cnn / f"{json_path.stem}.npy"
    features = None
    if feat_path.is_file():
        all_features = _load_features(feat_path)
        if len(all_features) != len(images):
            raise DataError(f"{feat_path} has {len(all_features)} rows but {json_path} has {len(images)} images")
        idx = np.asarray(rows, dtype=np.int64)
        features = all_features[idx[0] : idx[-1] + 1] if np.all(np.diff(idx) == 1) else all_features[idx]
    return Split(
        name=split,
        captions=captions,
        cap2img=np.asarray(cap2img, dtype=np.int64),
        features=features,
        image_files=files,
        image_root=str(image_root if image_root is not None else json_path.parent),
    )


def split_names(path: str | os.PathLike) -> list[str]:
    """Every split name :func:`load_split` may find in a data folder or Karpathy file (``dev`` and ``val`` both
    when either is there; ``train`` when a Karpathy file has ``restval``); any other name is not there."""
    root = resolve_data_dir(path)
    names: set[str] = set()
    if root.is_dir():
        for p in root.iterdir():
            if p.name.endswith("_caps.txt"):
                names.add(p.name[: -len("_caps.txt")])
            elif p.suffix == ".txt" and not p.stem.endswith(("_images", "_cap2img")):
                names.add(p.stem)  # image lists and caption-to-image files go with a split, they are not one
        jsons = sorted(root.glob("dataset_*.json"))
    else:
        jsons = [root] if root.suffix == ".json" else []
    if len(jsons) == 1:
        images = load_karpathy_json(jsons[0])["images"]
        found = {im["split"] for im in images if isinstance(im, dict) and isinstance(im.get("split"), str)}
        names |= found | ({"train"} if "restval" in found else set())
    if names & {"dev", "val"}:
        names |= {"dev", "val"}
    return sorted(names)
