"""Contact sheets: rows of thumbnails with captions (a query and its neighbours, a duplicate cluster)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageOps

from lookalike.embedder.sources import decode_image, read_file
from lookalike.errors import BadImage

Cell = tuple[str | Path | None, str]  # image file (None: blank) and its caption


def contact_sheet(
    rows: Sequence[Sequence[Cell]],
    out: str | Path,
    thumb: int = 128,
    titles: Sequence[str] | None = None,
) -> Path:
    """Draw each row's images as thumbnails with a caption under each, and `titles` (one a row)
    above them; save a PNG at `out`."""
    caption_height, title_height = 28, 18 if titles else 0
    row_height = title_height + thumb + caption_height + 8
    columns = max((len(row) for row in rows), default=1)
    sheet = Image.new("RGB", (columns * (thumb + 8) + 8, len(rows) * row_height + 8), "white")
    draw = ImageDraw.Draw(sheet)
    for r, row in enumerate(rows):
        top = 8 + r * row_height
        if titles:
            draw.text((8, top + 2), titles[r], fill=(30, 60, 150))
            top += title_height
        for c, (path, caption) in enumerate(row):
            left = 8 + c * (thumb + 8)
            tile = thumbnail(path, thumb)
            sheet.paste(tile, (left + (thumb - tile.width) // 2, top + (thumb - tile.height) // 2))
            for line_no, line in enumerate(caption.splitlines()[:2]):
                draw.text((left, top + thumb + 2 + 12 * line_no), line[:22], fill="black")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


def thumbnail(path: str | Path | None, size: int) -> Image.Image:
    """An image file fitted into `size` x `size` (blank for None, grey if it cannot be read)."""
    if path is None:
        return Image.new("RGB", (size, size), "white")
    try:
        image = decode_image(read_file(path).data)
    except (OSError, BadImage):
        return Image.new("RGB", (size, size), (220, 220, 220))  # moved or unreadable since
    return ImageOps.contain(image, (size, size))
