"""One encoded image (PNG/JPEG bytes or a file) -> (3, H, W) uint8, with Pillow.

Shared by the image-folder loader on the driver (`folders`) and by the Spark
executors that decode images where they live (`trainer.sources`), so both read
the same bytes into the same pixels. Imports Pillow only (no tqdm): executors
import it.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from util.data.dataset import DataError

# modes that convert to RGB (alpha is dropped, not composited)
CONVERTIBLE = {"RGB", "L", "LA", "P", "PA", "RGBA", "CMYK", "YCbCr", "1"}


def decode_image(
    source: str | Path | bytes | bytearray | memoryview, size: tuple[int, int], name: str = ""
) -> np.ndarray:
    """One image as (3, H, W) uint8 from a file path or its encoded bytes.

    size: (width, height) the image must have; name: how errors name the image
    (default: the path). Raises DataError for a wrong size or mode, or bytes that
    are not a readable image.
    """
    what = name or str(source)
    fp = io.BytesIO(bytes(source)) if isinstance(source, (bytes, bytearray, memoryview)) else source
    try:
        with Image.open(fp) as img:
            if img.size != tuple(size):
                raise DataError(
                    f"{what}: image is {img.size[0]}x{img.size[1]}, expected {size[0]}x{size[1]}"
                )
            if img.mode not in CONVERTIBLE:
                raise DataError(f"{what}: unsupported image mode {img.mode!r}, expected RGB")
            img.load()
            rgb = img if img.mode == "RGB" else img.convert("RGB")
            return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)  # (H, W, 3) -> (3, H, W)
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{what}: unreadable or corrupt image ({e})") from e
