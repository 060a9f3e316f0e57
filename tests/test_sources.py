"""Image discovery and decoding: allowlists, labels from folders, and every kind of bad file."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import write_bad_files
from PIL import Image

from lookalike.embedder.sources import decode_image, walk_images
from lookalike.errors import BadImage


def test_each_bad_file_raises_bad_image_with_its_reason(tmp_path: Path) -> None:
    expected = write_bad_files(tmp_path)
    for name, word in expected.items():
        with pytest.raises(BadImage, match=word):
            decode_image((tmp_path / name).read_bytes())


def test_pixel_limit_is_a_parameter(photo_dir: Path) -> None:
    data = (photo_dir / "chelsea.jpg").read_bytes()
    assert decode_image(data).size == (451, 300)
    with pytest.raises(BadImage, match="pixels"):
        decode_image(data, max_pixels=100_000)


def test_transparent_image_is_composited_on_white(tmp_path: Path) -> None:
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(tmp_path / "clear.png")
    image = decode_image((tmp_path / "clear.png").read_bytes())
    assert image.mode == "RGB"
    assert image.getpixel((4, 4)) == (255, 255, 255)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    Image.new("RGB", (40, 20)).save(tmp_path / "rotated.jpg", exif=exif)
    assert decode_image((tmp_path / "rotated.jpg").read_bytes()).size == (20, 40)


def test_grayscale_and_palette_images_become_rgb(tmp_path: Path) -> None:
    Image.new("L", (8, 8), 100).save(tmp_path / "gray.png")
    Image.new("P", (8, 8)).save(tmp_path / "palette.gif")
    for name in ("gray.png", "palette.gif"):
        assert decode_image((tmp_path / name).read_bytes()).mode == "RGB"


def test_walk_sorted_allowlisted_hidden_skipped_labels_from_folders(tmp_path: Path) -> None:
    for relative in (
        "cats/b.jpg",
        "cats/a.PNG",
        "dogs/x/c.webp",
        "top.jpg",
        "notes.txt",
        ".hidden/d.jpg",
        "cats/.e.jpg",
    ):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"")
    sources = list(walk_images([tmp_path], labels_from_folders=True))
    assert [s.path.relative_to(tmp_path).as_posix() for s in sources] == [
        "top.jpg",
        "cats/a.PNG",
        "cats/b.jpg",
        "dogs/x/c.webp",
    ]
    assert [s.label for s in sources] == [None, "cats", "cats", "dogs"]
    assert all(s.label is None for s in walk_images([tmp_path]))


def test_walk_accepts_single_files_and_refuses_missing_paths(tmp_path: Path) -> None:
    (tmp_path / "one.jpg").write_bytes(b"")
    assert [s.path.name for s in walk_images([tmp_path / "one.jpg"])] == ["one.jpg"]
    with pytest.raises(FileNotFoundError, match="no such file"):
        list(walk_images([tmp_path / "missing"]))
