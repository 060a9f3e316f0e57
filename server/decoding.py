"""Untrusted uploads: screened from their headers before any pixel is decoded, and decoded within a
per-process pixel budget, so that no upload can take a worker's memory or hold a thread for long.

What bounds a decode: the format allowlist and `max_pixels` (from the header), the aspect ratio,
one frame (Pillow decodes the first frame of an animated GIF, PNG or WebP and nothing else), one
decoded image at a time per request, and for a progressive JPEG its number of scans (libjpeg walks
every coefficient of the image once per scan: 1,000 scans of a 4-megapixel image took 6.7 s, in
38 kB).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from lookalike.embedder.sources import check_header
from lookalike.errors import BadImage

MAX_JPEG_SCANS = 64  # encoders write 1 (baseline) to about 20 (mozjpeg's progressive scripts)
SOS = b"\xff\xda"  # a JPEG's start-of-scan marker (0xFF in entropy-coded data is stuffed: FF00)


def screen(data: bytes, name: str, max_pixels: int) -> int:
    """The pixel count of an upload whose header passes every check; `BadImage` naming it if not."""
    try:
        header = check_header(data, max_pixels)
        if header.format in ("JPEG", "MPO") and (scans := data.count(SOS)) > MAX_JPEG_SCANS:
            raise BadImage(
                f"a JPEG of {scans} scans; the limit is {MAX_JPEG_SCANS} (each one costs a pass "
                "over the whole image)"
            )
    except BadImage as error:
        raise BadImage(f"{name}: {error}") from None
    return header.width * header.height


class PixelBudget:
    """At most `limit` pixels decoding at once in this process: a request takes the size of its
    largest image (capped at `limit`) and waits while other requests hold the rest."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._free = limit
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def take(self, pixels: int) -> Iterator[None]:
        pixels = min(pixels, self.limit)
        with self._changed:
            self._changed.wait_for(lambda: self._free >= pixels)
            self._free -= pixels
        try:
            yield
        finally:
            with self._changed:
                self._free += pixels
                self._changed.notify_all()
