"""Pictures of a Jacobian's sparsity pattern: unicode blocks for a terminal, PNG for a file.

Both work from the COO triplets (``rows``, ``cols``) without building the
dense m x n matrix: a pattern larger than the picture is binned, a bin being
set when any entry in it is structurally nonzero, so a single nonzero is
never lost to downsampling.
"""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np

# A terminal cell is about twice as tall as wide: one cell shows two rows of one column.
HALF_BLOCKS = {(False, False): " ", (True, False): "\u2580", (False, True): "\u2584", (True, True): "\u2588"}


def binned(rows, cols, shape, max_rows: int, max_cols: int) -> tuple[np.ndarray, int]:
    """A boolean grid of at most max_rows x max_cols, and the bin size (entries per side of a bin)."""
    m, n = shape
    step = max(1, math.ceil(m / max_rows), math.ceil(n / max_cols))
    grid = np.zeros((math.ceil(m / step) if m else 0, math.ceil(n / step) if n else 0), dtype=bool)
    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    grid[rows // step, cols // step] = True
    return grid, step


def text(rows, cols, shape, width: int = 80, height: int = 40) -> str:
    """The pattern in half blocks (two matrix rows per line), framed, with its size and density."""
    grid, step = binned(rows, cols, shape, max_rows=2 * height, max_cols=width)
    if grid.shape[0] % 2:
        grid = np.vstack([grid, np.zeros((1, grid.shape[1]), dtype=bool)])
    lines = ["\u250c" + "\u2500" * grid.shape[1] + "\u2510"]
    for top, bottom in zip(grid[0::2], grid[1::2]):
        lines.append("\u2502" + "".join(HALF_BLOCKS[bool(a), bool(b)] for a, b in zip(top, bottom)) + "\u2502")
    lines.append("\u2514" + "\u2500" * grid.shape[1] + "\u2518")
    m, n = shape
    nnz = len(set(zip(np.asarray(rows).tolist(), np.asarray(cols).tolist())))
    density = nnz / (m * n) if m * n else 0.0
    lines.append(f"{m} x {n}, {nnz} nonzero ({100 * density:.3g}%)"
                 + (f", {step} x {step} entries per cell half" if step > 1 else ""))
    return "\n".join(lines)


def png(rows, cols, shape, path: str, max_pixels: int = 1000) -> str:
    """Write the pattern as a PNG: with matplotlib's ``spy`` when installed, else as a plain bitmap
    (nonzeros black on white, one square of pixels per entry). Returns which renderer wrote it."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        write_bitmap(bitmap(rows, cols, shape, max_pixels), path)
        return "bitmap"
    grid, step = binned(rows, cols, shape, max_pixels, max_pixels)
    fig, ax = plt.subplots(figsize=(6, 6 * max(grid.shape[0], 1) / max(grid.shape[1], 1) + 0.5))
    ax.spy(grid, markersize=0 if grid.size > 2500 else max(1, 200 // max(grid.shape)), aspect="auto")
    ax.set_title(f"Jacobian {shape[0]} x {shape[1]}" + (f" ({step}x{step} bins)" if step > 1 else ""))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return "matplotlib"


def bitmap(rows, cols, shape, max_pixels: int = 1000) -> np.ndarray:
    """uint8 image: 0 (black) where the pattern is set, 255 elsewhere; small patterns scaled up."""
    grid, _ = binned(rows, cols, shape, max_pixels, max_pixels)
    if not grid.size:  # a PNG needs at least one pixel
        grid = np.zeros((1, 1), dtype=bool)
    scale = max(1, 200 // max(max(grid.shape), 1))
    return np.where(np.kron(grid, np.ones((scale, scale), dtype=bool)), 0, 255).astype(np.uint8)


def write_bitmap(image: np.ndarray, path: str) -> None:
    """An 8-bit greyscale PNG (signature, IHDR, one zlib IDAT, IEND), no dependency beyond zlib."""
    h, w = image.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + image[i].tobytes() for i in range(h))  # filter type 0 per row
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
