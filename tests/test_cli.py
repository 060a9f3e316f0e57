"""The command line through click's CliRunner: each command's output, and errors without tracebacks."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from lookalike.cli import main
from lookalike.cli.demo import write_digits, write_photos

TINY_ARGS = ["--backbone", "resnet18", "--weights", "none", "--image-size", "64", "--workers", "0"]


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_embed_then_info(mixed_dir, tmp_path: Path) -> None:
    root, bad, good = mixed_dir
    result = run("embed", root, "-c", tmp_path / "c", *TINY_ARGS, "--labels-from-folders", "-q")
    assert result.exit_code == 0, result.output
    assert f"{len(good)} embedded" in result.output
    assert f"{len(bad)} failed" in result.output
    assert "failed: " in result.output and "empty file" in result.output
    info = run("info", "-c", tmp_path / "c")
    assert info.exit_code == 0, info.output
    assert "backbone     resnet18 (weights: None)" in info.output
    assert f"items        {len(good)} in 1 shards" in info.output
    assert f"failed       {len(bad)}" in info.output


@pytest.mark.slow
def test_mismatched_spec_is_a_one_line_error(photo_dir: Path, tmp_path: Path) -> None:
    assert run("embed", photo_dir, "-c", tmp_path / "c", *TINY_ARGS, "-q").exit_code == 0
    result = run("embed", photo_dir, "-c", tmp_path / "c", "--layer", "layer4", "-q")
    assert result.exit_code == 1
    assert result.output.startswith("Error: collection") and "layers" in result.output
    assert "Traceback" not in result.output


def test_user_errors_are_messages_not_tracebacks(tmp_path: Path) -> None:
    cases = {
        ("embed", tmp_path / "missing", "-c", tmp_path / "c"): "no such file",
        ("embed", tmp_path, "-c", tmp_path / "c", "--backbone", "resnet_nope"): "unknown backbone",
        ("info", "-c", tmp_path): "not a collection",
        ("layers", "resnet18", "--filter", "x"): None,
    }
    for args, message in cases.items():
        result = run(*args)
        assert "Traceback" not in result.output
        if message is not None:
            assert result.exit_code == 1 and message in result.output.lower(), (args, result.output)


def test_layers_lists_shapes(tmp_path: Path) -> None:
    result = run("layers", "resnet18", "--image-size", "64", "--filter", "layer*")
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()[1:]}
    assert lines["layer4"].endswith("(512, 2, 2)") and lines["layer3"].endswith("(256, 4, 4)")
    assert "conv1" not in lines


def test_backbones_lists_both_sources() -> None:
    result = run("backbones", "--filter", "*resnet18*")
    assert result.exit_code == 0
    assert {"resnet18", "timm:resnet18"} <= set(result.output.split())


def test_demo_image_writers(tmp_path: Path) -> None:
    assert write_digits(tmp_path / "digits") == 1797
    assert sorted(p.name for p in (tmp_path / "digits").iterdir()) == [str(d) for d in range(10)]
    assert Image.open(next((tmp_path / "digits" / "7").iterdir())).size == (32, 32)
    written = write_photos(tmp_path / "photos")
    photos = sorted((tmp_path / "photos").iterdir())
    assert written == len(photos) >= 6
    copies = [p for p in photos if p.name.startswith("copy-of-")]
    assert len(copies) == 3 and all((p.parent / p.name[8:]).exists() for p in copies)
    assert all(min(Image.open(p).size) >= 200 for p in photos if p not in copies)


def test_serve_beyond_loopback_without_keys_refuses_before_printing(synthetic, monkeypatch) -> None:
    for name in ("LOOKALIKE_READ_KEYS", "LOOKALIKE_WRITE_KEYS"):
        monkeypatch.delenv(name, raising=False)
    result = run("serve", "--host", "0.0.0.0", "--port", "1", f"c={synthetic.path}")
    assert result.exit_code == 1
    assert result.output.count("\n") == 1, result.output  # the one-line error, nothing before it
    assert result.output.startswith("Error: refusing to serve 0.0.0.0 without API keys")
    assert "serving" not in result.output
