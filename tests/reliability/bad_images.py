"""Broken and hostile images, generated in code: every format truncated and bit-flipped, headers
that declare huge sizes (decompression bombs), a JPEG of a thousand scans, odd pixel modes,
animations, EXIF rotations, and files that are no image at all.

Each payload is (name, bytes, expect): "4xx" must be refused, "2xx" accepted, "any" either.
"""

from __future__ import annotations

import gzip
import io
import pickle
import random
import struct
import zipfile
import zlib
from collections.abc import Iterator

import numpy as np
from conftest import photo
from PIL import Image


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def small_photo() -> Image.Image:
    return photo("chelsea").resize((64, 48))


def base_images() -> dict[str, bytes]:
    image = small_photo()
    return {
        "jpeg": encode(image, "JPEG", quality=85),
        "png": encode(image, "PNG"),
        "webp": encode(image, "WEBP", quality=80),
        "gif": encode(image.convert("P"), "GIF"),
        "tiff": encode(image, "TIFF", compression="tiff_deflate"),
        "bmp": encode(image, "BMP"),
    }


def corruptions(fmt: str, data: bytes, rng: random.Random) -> Iterator[tuple[str, bytes, str]]:
    """(name, bytes, expect) of one valid file broken in many ways."""
    for keep in (1, 8, 16):
        yield f"{fmt}/first-{keep}-bytes", data[:keep], "4xx"
    for fraction in (0.05, 0.2, 0.4, 0.6, 0.8, 0.95, 0.99):
        yield f"{fmt}/truncated-{fraction:.0%}", data[: int(len(data) * fraction)], "any"
    for number in range(12):
        flipped = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            flipped[rng.randrange(len(flipped))] ^= rng.randint(1, 255)
        yield f"{fmt}/bytes-flipped-{number}", bytes(flipped), "any"
    zeroed = bytearray(data)
    zeroed[len(data) // 4 : len(data) // 2] = bytes(len(data) // 2 - len(data) // 4)
    yield f"{fmt}/zeroed-middle", bytes(zeroed), "any"
    yield f"{fmt}/garbage-appended", data + rng.randbytes(1000), "any"
    yield f"{fmt}/garbage-prepended", rng.randbytes(10) + data, "any"
    yield f"{fmt}/twice", data + data, "any"


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares `width` x `height` with almost no pixel data behind it."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


def patched(data: bytes, offset: int, packed: bytes) -> bytes:
    return data[:offset] + packed + data[offset + len(packed) :]


def jpeg_declaring(width: int, height: int) -> bytes:
    data = encode(small_photo(), "JPEG")
    sof = data.index(b"\xff\xc0")  # baseline SOF0: length(2) precision(1) height(2) width(2)
    return patched(data, sof + 5, struct.pack(">HH", height, width))


def gif_frames(data: bytes) -> list[int]:
    """Offsets of a GIF's image descriptors (one per frame), found by walking its blocks."""
    position, frames = 13, []
    if data[10] & 0x80:  # a global colour table follows the screen descriptor
        position += 3 << ((data[10] & 7) + 1)
    while data[position] != 0x3B:  # the trailer
        if data[position] == 0x2C:
            frames.append(position)
            packed = data[position + 9]
            position += 10 + ((3 << ((packed & 7) + 1)) if packed & 0x80 else 0) + 1  # + LZW size
        else:  # an extension: introducer and label
            position += 2
        while data[position]:  # data sub-blocks, up to the empty one
            position += data[position] + 1
        position += 1
    return frames


def gif_with_frame_size(data: bytes, frame: int, size: tuple[int, int]) -> bytes:
    return patched(data, gif_frames(data)[frame] + 5, struct.pack("<HH", *size))


def gif_declaring(screen: tuple[int, int], frame: tuple[int, int]) -> bytes:
    data = encode(Image.new("P", (10, 10), 3), "GIF")
    data = patched(data, 6, struct.pack("<HH", *screen))  # the logical screen
    return gif_with_frame_size(data, 0, frame)


def bmp_declaring(width: int, height: int) -> bytes:
    return patched(encode(small_photo(), "BMP"), 18, struct.pack("<ii", width, height))


def webp_declaring(width: int, height: int) -> bytes:
    """A WebP with an extended (VP8X) header whose canvas is `width` x `height`."""
    data = encode(small_photo(), "WEBP", exif=b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x00\x00")
    assert data[12:16] == b"VP8X"
    canvas = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return patched(data, 24, canvas)


def tiff_declaring(width: int, height: int) -> bytes:
    """A minimal uncompressed greyscale TIFF declaring `width` x `height`, with 8 bytes of data."""
    tags = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 1)]
    tags += [(273, 4, 0), (277, 3, 1), (278, 4, height), (279, 4, 8)]
    ifd_offset = 8
    data_offset = ifd_offset + 2 + 12 * len(tags) + 4
    tags = [(t, kind, data_offset if t == 273 else v) for t, kind, v in tags]
    ifd = struct.pack("<H", len(tags))
    for tag, kind, value in tags:
        ifd += struct.pack("<HHI", tag, kind, 1) + struct.pack("<I", value)
    return b"II*\x00" + struct.pack("<I", ifd_offset) + ifd + b"\x00" * 4 + b"\x80" * 8


def jpeg_scan_bomb(side: int = 2000, repeats: int = 1000) -> bytes:
    """A progressive JPEG whose last scan is repeated: libjpeg walks the image once per scan."""
    data = encode(Image.new("RGB", (side, side), (120, 30, 200)), "JPEG", progressive=True)
    last = data.rindex(b"\xff\xda")
    return data[:-2] + data[last:-2] * repeats + b"\xff\xd9"


def bombs() -> list[tuple[str, bytes, str]]:
    return [
        ("bomb/png-100000x100000", png_declaring(100_000, 100_000), "4xx"),
        ("bomb/png-7000x6000", png_declaring(7000, 6000), "4xx"),
        ("bomb/png-1x2147483647", png_declaring(1, 2**31 - 1), "4xx"),
        ("bomb/jpeg-65500x65500", jpeg_declaring(65500, 65500), "4xx"),
        ("bomb/jpeg-7000x6000", jpeg_declaring(7000, 6000), "4xx"),
        ("bomb/gif-screen-65535x65535", gif_declaring((65535, 65535), (10, 10)), "4xx"),
        ("bomb/gif-frame-60000x60000", gif_declaring((10, 10), (60000, 60000)), "4xx"),
        ("bomb/gif-frame-8000x8000", gif_declaring((10, 10), (8000, 8000)), "4xx"),
        ("bomb/bmp-50000x50000", bmp_declaring(50000, 50000), "4xx"),
        ("bomb/bmp-negative", bmp_declaring(-64, -(2**31)), "4xx"),
        ("bomb/webp-16384x16384", webp_declaring(16384, 16384), "4xx"),
        ("bomb/tiff-100000x100000", tiff_declaring(100_000, 100_000), "4xx"),
        ("bomb/tiff-7000x6000", tiff_declaring(7000, 6000), "4xx"),
        ("bomb/jpeg-1000-scans", jpeg_scan_bomb(), "4xx"),
        ("bomb/png-1x1000000", encode(Image.new("L", (1, 1_000_000)), "PNG"), "4xx"),
        ("bomb/gif-20000x1", encode(Image.new("P", (20_000, 1)), "GIF"), "4xx"),
    ]


def odd_modes() -> list[tuple[str, bytes, str]]:
    """Valid images in modes a decoder must convert: CMYK, 16-bit, float, bilevel, alpha, palette."""
    image = small_photo()
    ramp = np.linspace(0, 1, 48 * 64).reshape(48, 64)
    out = {
        "cmyk-jpeg": encode(image.convert("CMYK"), "JPEG"),
        "cmyk-tiff": encode(image.convert("CMYK"), "TIFF"),
        "16-bit-png": encode(Image.fromarray((ramp * 65535).astype(np.uint16)), "PNG"),
        "16-bit-tiff": encode(Image.fromarray((ramp * 65535).astype(np.uint16)), "TIFF"),
        "32-bit-int-tiff": encode(Image.fromarray((ramp * 65535).astype(np.int32)), "TIFF"),
        "float-tiff": encode(Image.fromarray(ramp.astype(np.float32)), "TIFF"),
        "la-png": encode(image.convert("LA"), "PNG"),
        "rgba-png": encode(image.convert("RGBA"), "PNG"),
        "rgba-webp": encode(image.convert("RGBA"), "WEBP"),
        "bilevel-png": encode(image.convert("1"), "PNG"),
        "bilevel-tiff": encode(image.convert("1"), "TIFF", compression="group4"),
        "grey-jpeg": encode(image.convert("L"), "JPEG"),
        "palette-transparent-gif": encode(image.convert("P"), "GIF", transparency=0),
        "palette-png": encode(image.convert("P"), "PNG"),
        "lab-tiff": encode(image.convert("LAB"), "TIFF"),
        "progressive-jpeg": encode(image, "JPEG", progressive=True),
        "lossless-webp": encode(image, "WEBP", lossless=True),
        "1x1-png": encode(Image.new("RGB", (1, 1)), "PNG"),
        "1x64-png": encode(Image.new("RGB", (1, 64)), "PNG"),
    }
    return [(f"mode/{name}", data, "2xx") for name, data in out.items()]


def animated() -> list[tuple[str, bytes, str]]:
    frames = [small_photo().rotate(angle) for angle in range(0, 360, 12)]
    options = {"save_all": True, "append_images": frames[1:], "duration": 40}
    return [
        ("animated/gif-30-frames", encode(frames[0].convert("P"), "GIF", **options), "2xx"),
        ("animated/apng-30-frames", encode(frames[0], "PNG", **options), "2xx"),
        ("animated/webp-30-frames", encode(frames[0], "WEBP", **options), "2xx"),
    ]


def exif_rotated() -> list[tuple[str, bytes, str]]:
    out = []
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        data = encode(small_photo(), "JPEG", exif=exif.tobytes())
        out.append((f"exif/orientation-{orientation}", data, "2xx"))
    return out


def not_images(rng: random.Random) -> list[tuple[str, bytes, str]]:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("a.txt", "hello")
    payloads = {
        "empty": b"",
        "text": b"this is not an image\n",
        "html": b"<!doctype html><script>alert(1)</script>",
        "json": b'{"image": "no"}',
        "svg": b'<svg xmlns="http://www.w3.org/2000/svg"><image href="file:///etc/passwd"/></svg>',
        "pdf": b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n",
        "zip": archive.getvalue(),
        "gzip": gzip.compress(b"\x00" * 100_000),
        "elf": b"\x7fELF\x02\x01\x01" + bytes(57),
        "pickle": pickle.dumps({"a": 1}),
        "png-signature-only": b"\x89PNG\r\n\x1a\n",
        "gif-signature-only": b"GIF89a",
        "jpeg-soi-only": b"\xff\xd8",
        "jpeg-soi-eoi": b"\xff\xd8\xff\xd9",
        "riff-webp-empty": b"RIFF\x04\x00\x00\x00WEBP",
        "tiff-le-signature": b"II*\x00",
        "tiff-be-signature": b"MM\x00*",
        "bmp-signature": b"BM",
        "ico": encode(Image.new("RGB", (16, 16)), "ICO"),
        "pcx": encode(Image.new("RGB", (16, 16)), "PCX"),
        "ppm": encode(Image.new("RGB", (16, 16)), "PPM"),
        "tga": encode(Image.new("RGB", (16, 16)), "TGA"),
        "eps-header": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n",
    }
    for size in (1, 7, 100, 1000, 10_000):
        payloads[f"random-{size}-bytes"] = rng.randbytes(size)
    return [(f"not-an-image/{name}", data, "4xx") for name, data in payloads.items()]


def image_payloads(seed: int = 0) -> list[tuple[str, bytes, str]]:
    rng = random.Random(seed)
    out = []
    for fmt, data in base_images().items():
        out.append((f"{fmt}/valid", data, "2xx"))
        out.extend(corruptions(fmt, data, rng))
    return out + bombs() + odd_modes() + animated() + exif_rotated() + not_images(rng)
