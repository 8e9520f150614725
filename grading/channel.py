"""The one channel from a step's process to the grader: a pipe the grader owns, carrying
frames of raw outputs (a JSON `meta` and named numeric arrays, an uncompressed .npz).

The sending side is the step runner, in the same process as submitted code, so everything
that arrives is untrusted data: `Reader` refuses frames that are too big, not an .npz,
compressed, or hold anything but numbers (no pickles, no objects), and a refused frame ends
the step. Nothing in a frame is a verdict; the grader judges what the numbers say.
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
import zipfile
from typing import Any

import numpy as np
from numpy.lib import format as npformat

MAX_FRAME = 64 << 20  # bytes; the largest frame (the CNN's trajectories) is about 1.5 MB
HEADER = struct.Struct("<Q")
META = "__meta__"


class ChannelError(ValueError):
    """A frame that is not what the runner sends: the step process is not trusted further.

    `frames`: the good frames that came before it in the same read (`Reader.feed`), which
    the grader still takes, in order, before it ends the step."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.frames: list[tuple[dict[str, Any], dict[str, np.ndarray]]] = []


def encode(meta: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **{META: np.array(json.dumps(meta))}, **(arrays or {}))
    payload = buf.getvalue()
    return HEADER.pack(len(payload)) + payload


def send(fd: int, meta: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> None:
    """Writes one frame to the pipe fd (blocking until all of it is written)."""
    data = memoryview(encode(meta, arrays))
    while data:
        data = data[os.write(fd, data) :]


MAX_META = 1 << 20  # characters of a frame's JSON meta


def _array(z: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    """One .npy member, its header checked against its size before anything is allocated."""
    with z.open(info) as f:
        version = npformat.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise ChannelError(f"array {info.filename!r}: .npy version {version}")
        read_header = (
            npformat.read_array_header_1_0 if version == (1, 0) else npformat.read_array_header_2_0
        )
        shape, fortran, dtype = read_header(f)
        if dtype.hasobject:
            raise ChannelError(f"array {info.filename!r} of dtype {dtype} (only numbers travel)")
        count = math.prod(shape)
        if count * dtype.itemsize != info.file_size - f.tell():
            raise ChannelError(f"array {info.filename!r}: its header does not fit its size")
        data = f.read(count * dtype.itemsize)
    a = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    return a.copy()


def decode(payload: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(meta, arrays) of one frame's payload; ChannelError if it is not a plain frame (never
    another exception: the payload is untrusted)."""
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as z:
            infos = z.infolist()
            if any(i.compress_type != zipfile.ZIP_STORED for i in infos):
                raise ChannelError("a compressed frame")
            if sum(i.file_size for i in infos) > MAX_FRAME:
                raise ChannelError("a frame larger than it says")
            if len({i.filename for i in infos}) != len(infos):
                raise ChannelError("a frame with an array twice")
            arrays = {i.filename.removesuffix(".npy"): _array(z, i) for i in infos}
    except ChannelError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever a forged archive makes the readers raise
        raise ChannelError(f"an unreadable frame ({type(e).__name__}: {str(e)[:200]})") from None
    meta_arr = arrays.pop(META, None)
    if meta_arr is None or meta_arr.shape != () or meta_arr.dtype.kind != "U":
        raise ChannelError("a frame without its meta entry")
    text = str(meta_arr)
    if len(text) > MAX_META:
        raise ChannelError(f"a frame whose meta is longer than {MAX_META} characters")
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise ChannelError(f"a frame whose meta is not plain JSON ({type(e).__name__})") from None
    if not isinstance(meta, dict):
        raise ChannelError("a frame whose meta is not an object")
    for name, a in arrays.items():
        if a.dtype.kind not in "biuf":
            raise ChannelError(f"array {name!r} of dtype {a.dtype} (only numbers travel)")
    return meta, arrays


class Reader:
    """Reassembles frames from the bytes read off the pipe, in order."""

    def __init__(self, max_total: int = 8 * MAX_FRAME) -> None:
        self.buf = bytearray()
        self.total = 0
        self.max_total = max_total

    def feed(self, data: bytes) -> list[tuple[dict[str, Any], dict[str, np.ndarray]]]:
        """The frames that `data` completes, in order. A bad frame raises ChannelError with
        the good frames before it in `.frames`: one read may hold a good frame ("ready")
        and a bad one right after it, and the good one must count (it ends the start-up)."""
        frames: list[tuple[dict[str, Any], dict[str, np.ndarray]]] = []
        try:
            self.total += len(data)
            if self.total > self.max_total:
                raise ChannelError(f"more than {self.max_total} bytes from one step")
            self.buf += data
            while len(self.buf) >= HEADER.size:
                (size,) = HEADER.unpack_from(self.buf)
                if size > MAX_FRAME:
                    raise ChannelError(f"a frame of {size} bytes (limit {MAX_FRAME})")
                if len(self.buf) < HEADER.size + size:
                    break
                payload = bytes(self.buf[HEADER.size : HEADER.size + size])
                del self.buf[: HEADER.size + size]
                frames.append(decode(payload))
        except ChannelError as e:
            e.frames = frames
            raise
        return frames
