"""Line-per-item text files (captions, image lists), read in chunks with errors naming the line."""
from __future__ import annotations

import os
from collections.abc import Iterator

from ..runs import iter_lines

#: Lines read at once by :func:`read_caption_chunks`.
CAPTION_CHUNK = 65536


def read_caption_chunks(path: str | os.PathLike, chunk: int = CAPTION_CHUNK) -> Iterator[list[str]]:
    """Lines of a UTF-8 caption file in lists of ``chunk`` (a leading byte-order mark dropped; ``\\n``, ``\\r\\n``
    and ``\\r`` end a line); empty lines, bad encodings and over-long lines are errors naming the line, and a
    file that is not regular (a FIFO, a device) is refused without being read."""
    lines: list[str] = []
    for number, raw in enumerate(iter_lines(path, "text file"), 1):
        if number == 1:
            raw = raw.removeprefix(b"\xef\xbb\xbf")  # a byte-order mark is not part of the first word
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{path}: line {number} is not UTF-8") from None
        if not line.strip():
            raise ValueError(f"{path}: line {number} is empty")
        lines.append(line)
        if len(lines) == chunk:
            yield lines
            lines = []
    if lines:
        yield lines


def count_captions(path: str | os.PathLike) -> int:
    """Number of lines of a caption file, checked as :func:`read_caption_chunks` checks them."""
    return sum(len(lines) for lines in read_caption_chunks(path))
