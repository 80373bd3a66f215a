"""Arrays in the store: compressed .npy bytes (dtype and shape travel with them; no pickle)."""

from __future__ import annotations

import io
import zlib

import numpy as np


def encode_array(array: np.ndarray, level: int = 6) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return zlib.compress(buffer.getvalue(), level)


def decode_array(blob: bytes) -> np.ndarray:
    return np.load(io.BytesIO(zlib.decompress(blob)), allow_pickle=False)
