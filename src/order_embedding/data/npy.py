"""Two-dimensional ``.npy`` files read and written a block of rows at a time, in bounded memory.

Positioned reads and writes rather than memory maps, so the resident memory of
streaming a large file stays bounded by one block.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..runs import disk_full, is_disk_full

#: The storage dtypes of embedding files.
DTYPES = ("float16", "float32")


class NpyFileError(ValueError):
    """A missing, corrupt or truncated ``.npy`` file (message names the file)."""


class NpyRows:
    """Read-only row blocks of a 2-D ``.npy`` file by positioned reads (no memory map).

    Supports ``len``, ``.shape``, ``.dtype`` and ``rows[start:stop]`` (a fresh array),
    so the blockwise kernels can stream it while the process holds one block at a time.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                version = np.lib.format.read_magic(f)
                reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, fortran, dtype = reader(f)
                self.offset = f.tell()
        except (OSError, ValueError) as e:
            raise NpyFileError(f"{self.path}: not a readable .npy file ({e})") from None
        if len(shape) != 2 or fortran or dtype.hasobject:
            raise NpyFileError(f"{self.path}: expected a 2-D C-ordered numeric array, got shape {shape} dtype {dtype}")
        self.shape: tuple[int, int] = (int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(dtype)
        expected = self.offset + self.shape[0] * self.shape[1] * self.dtype.itemsize
        if self.path.stat().st_size < expected:
            raise NpyFileError(f"{self.path}: file is truncated ({self.path.stat().st_size} of {expected} bytes)")
        self._fd = os.open(self.path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        """Always 2."""
        return 2

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("NpyRows supports contiguous row slices only")
        start, stop, _ = key.indices(self.shape[0])
        out = np.empty((max(0, stop - start), self.shape[1]), dtype=self.dtype)
        if out.size:
            view = out.reshape(-1).view(np.uint8).data
            pos, done = self.offset + start * self.shape[1] * self.dtype.itemsize, 0
            while done < len(view):
                n = os.preadv(self._fd, [view[done:]], pos + done)
                if n <= 0:
                    raise NpyFileError(f"{self.path}: unexpected end of file")
                done += n
        return out

    def close(self) -> None:
        """Release the file descriptor."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        if getattr(self, "_fd", -1) >= 0:
            self.close()


class NpyWriter:
    """Write a 2-D ``.npy`` file of known shape block by block, appending rows in order."""

    def __init__(self, path: str | os.PathLike, shape: tuple[int, int], dtype: str | np.dtype) -> None:
        self.path = Path(path)
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(dtype)
        self.rows = 0
        self._file = open(self.path, "wb")
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.shape}
        np.lib.format.write_array_header_2_0(self._file, header)
        #: The size of the complete file.
        self.nbytes = self._file.tell() + self.shape[0] * self.shape[1] * self.dtype.itemsize

    def write(self, block: np.ndarray) -> None:
        """Append rows (converted to the file's dtype)."""
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.ndim != 2 or block.shape[1] != self.shape[1] or self.rows + len(block) > self.shape[0]:
            raise ValueError(f"{self.path}: block of shape {block.shape} does not fit the remaining rows of {self.shape}")
        try:
            self._file.write(block.tobytes())
        except OSError as e:
            self._fail(e)
        self.rows += len(block)

    def _fail(self, error: OSError) -> None:
        """Close the file and raise ``error``; a full disk becomes :class:`~order_embedding.runs.DiskFullError`
        naming the file and its full size. Removing the partial file is the caller's job."""
        try:
            self._file.close()
        except OSError:
            pass
        if is_disk_full(error):
            raise disk_full(self.path, self.nbytes) from None
        raise error

    def close(self) -> None:
        """Flush to disk; every row must have been written."""
        if self.rows != self.shape[0]:
            self._file.close()
            raise ValueError(f"{self.path}: {self.rows} of {self.shape[0]} rows written")
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as e:
            self._fail(e)
        self._file.close()
