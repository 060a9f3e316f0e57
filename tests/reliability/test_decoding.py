"""Decoding untrusted uploads is bounded: bombs are refused from their headers in milliseconds, only
the first frame of an animation is decoded, a request holds one decoded image at a time, and a
process decodes at most its pixel budget at once."""

from __future__ import annotations

import io
import threading
import time
import weakref
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import lookalike.embedder.preprocess as preprocess_module
from lookalike.embedder.sources import decode, decode_image
from lookalike.errors import BadImage
from lookalike.index.maintain import exact_index
from lookalike.index.search import Searcher
from lookalike.server.decoding import MAX_JPEG_SCANS, PixelBudget, screen
from lookalike.store.collection import Collection

from .bad_images import bombs, encode, gif_frames, gif_with_frame_size, jpeg_scan_bomb, small_photo

SERVER_MAX_PIXELS = 40_000_000  # the server's default


@pytest.mark.parametrize(("name", "data"), [(name, data) for name, data, _ in bombs()])
def test_every_bomb_is_refused_from_its_header_in_milliseconds(name: str, data: bytes) -> None:
    started = time.perf_counter()
    with pytest.raises(BadImage, match=r"^upload\.png: .*(pixels|bomb|scans)"):
        screen(data, "upload.png", SERVER_MAX_PIXELS)
    assert time.perf_counter() - started < 0.25, name


def test_a_jpeg_of_too_many_scans_is_refused_and_a_normal_one_is_not() -> None:
    bomb = jpeg_scan_bomb(side=256, repeats=MAX_JPEG_SCANS)
    with pytest.raises(BadImage, match="scans"):
        screen(bomb, "scans.jpg", SERVER_MAX_PIXELS)
    progressive = encode(small_photo(), "JPEG", progressive=True)
    assert screen(progressive, "ok.jpg", SERVER_MAX_PIXELS) == 64 * 48


def test_only_the_first_frame_of_an_animation_is_decoded() -> None:
    """A GIF whose second frame claims 60000 x 60000 pixels decodes (its first frame) at once."""
    noise = np.random.default_rng(0).integers(0, 255, (2, 10, 10), dtype=np.uint8)
    frames = [Image.fromarray(frame).convert("P") for frame in noise]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert len(gif_frames(data)) == 2
    data = gif_with_frame_size(data, 1, (60000, 60000))
    started = time.perf_counter()
    assert decode_image(data, SERVER_MAX_PIXELS).size == (10, 10)
    assert screen(data, "a.gif", SERVER_MAX_PIXELS) == 100
    assert time.perf_counter() - started < 0.25


def test_a_request_holds_one_decoded_image_at_a_time(empty_collection: Path, monkeypatch) -> None:
    collection = Collection.open(empty_collection)
    layer = collection.spec.layers[0]
    searcher = Searcher(collection, exact_index(collection, layer), layer, engine="torch")
    decoded: list[weakref.ref] = []
    held = []

    def decode_and_track(*args, **kwargs):
        held.append(sum(ref() is not None for ref in decoded))  # alive as the next one starts
        result = decode(*args, **kwargs)
        decoded.append(weakref.ref(result.image))
        return result

    monkeypatch.setattr(preprocess_module, "decode", decode_and_track)
    photo = encode(small_photo(), "PNG")
    vectors = searcher.embed_images([photo] * 6)
    assert vectors.shape == (6, collection.spec.dims[layer]) and np.allclose(vectors, vectors[0])
    assert max(held) == 0, held
    searcher.close()


def test_the_pixel_budget_makes_large_decodes_take_turns() -> None:
    """Ordered by events, not sleeps: "big" holds 80 of 100 until it is released."""
    budget, events = PixelBudget(100), []
    inside = {name: threading.Event() for name in ("big", "small", "huge")}
    release = threading.Event()

    def decode(name: str, pixels: int) -> None:
        with budget.take(pixels):
            events.append(f"{name} in")
            inside[name].set()
            if name == "big":
                release.wait(10)
            events.append(f"{name} out")

    threads = {
        name: threading.Thread(target=decode, args=(name, pixels))
        for name, pixels in (("big", 80), ("small", 20), ("huge", 10**9))  # huge: capped
    }
    threads["big"].start()
    assert inside["big"].wait(10)
    threads["small"].start()
    threads["huge"].start()
    assert inside["small"].wait(10)  # it fits beside the big one
    assert not inside["huge"].wait(0.2)  # it waits for the whole budget
    release.set()
    for thread in threads.values():
        thread.join(timeout=10)
    assert events.index("small in") < events.index("big out")
    assert events.index("huge in") > events.index("big out")


@pytest.mark.parametrize("image_format", ["PNG", "TIFF"])
def test_16_bit_greyscale_is_scaled_not_clipped(image_format: str) -> None:
    ramp = np.linspace(0, 1, 48 * 64).reshape(48, 64)
    sixteen = io.BytesIO()
    Image.fromarray((ramp * 65535).astype(np.uint16)).save(sixteen, format=image_format)
    eight = np.asarray(Image.fromarray((ramp * 255).astype(np.uint8)).convert("RGB"), float)
    decoded = np.asarray(decode_image(sixteen.getvalue()), float)
    assert np.abs(decoded - eight).max() <= 1


def test_the_aspect_ratio_limit_holds_for_the_library_too() -> None:
    """Every decode (bulk jobs, search, uploads) refuses over 100:1 from the header; 100:1 passes."""
    assert decode_image(encode(Image.new("L", (1000, 10)), "PNG")).size == (1000, 10)
    with pytest.raises(BadImage, match="times the other"):
        decode_image(encode(Image.new("L", (10, 1010)), "PNG"))
