"""Forward hooks on named layers and pooling, on a real torchvision model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY

from lookalike.embedder import FeatureHooks, create_model, get_backbone, list_layers, pool


def hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_hooks_capture_the_right_shapes_and_are_removed() -> None:
    model = create_model("resnet18", weights=None).model.eval()
    with FeatureHooks(model, ["layer3", "layer4"]) as hooks:
        assert hook_count(model) == 2
        with torch.inference_mode():
            model(torch.randn(2, 3, 64, 64))
        captured = hooks.pop()
        assert captured["layer3"].shape == (2, 256, 4, 4)
        assert captured["layer4"].shape == (2, 512, 2, 2)
        assert hooks.pop() == {}  # pop clears: nothing outlives its batch
    assert hook_count(model) == 0


def test_several_layers_in_one_pass_with_known_widths() -> None:
    with get_backbone(**TINY, layers=["layer2", "layer4", "embedding"], device="cpu") as backbone:
        assert backbone.spec.dims == {"layer2": 128, "layer4": 512, "embedding": 512}
        vectors = backbone.embed(torch.randn(3, 3, 64, 64))
        assert {k: v.shape for k, v in vectors.items()} == {
            "layer2": (3, 128),
            "layer4": (3, 512),
            "embedding": (3, 512),
        }
        # avg-pooled layer4 is what resnet's own avgpool feeds the (removed) head
        assert torch.allclose(
            torch.from_numpy(vectors["layer4"]), torch.from_numpy(vectors["embedding"]), atol=1e-5
        )
        model = backbone.model
    assert hook_count(model) == 0


def test_layers_with_their_own_pooling_share_one_hook() -> None:
    layers = ["embedding", "layer3/max", "layer3/gem", "layer3"]
    with get_backbone(**TINY, layers=layers, normalize=False, device="cpu") as backbone:
        assert hook_count(backbone.model) == 1  # layer3, once, whatever it is pooled with
        assert backbone.spec.dims == {"embedding": 512, "layer3/max": 256, "layer3/gem": 256,
                                      "layer3": 256}  # fmt: skip
        pixels = torch.randn(2, 3, 64, 64)
        vectors = backbone.embed(pixels)
        maps = backbone.feature_maps(pixels)["layer3/max"]
    assert maps.shape == (2, 256, 4, 4)
    for layer, how in (("layer3/max", "max"), ("layer3/gem", "gem"), ("layer3", "avg")):
        np.testing.assert_allclose(vectors[layer], pool(maps, how).numpy(), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"bad layer 'layer3/median'.*MODULE/POOLING"):
        get_backbone(**TINY, layers=["layer3/median"], device="cpu")


def test_default_layers_are_the_deepest_inner_stages_of_any_backbone() -> None:
    with get_backbone(layers=None, image_size=64, device="cpu") as lite:  # the offline default
        assert lite.spec.layers == ("embedding", "blocks.5/gem", "blocks.6/gem")
        assert lite.spec.dims == {"embedding": 1280, "blocks.5/gem": 192, "blocks.6/gem": 320}
    with get_backbone("timm:test_vit", None, layers=None, device="cpu") as vit:
        assert vit.spec.layers[0] == "embedding"  # tokens: avg-pooled, not GeM
        assert [layer.split("/")[1] for layer in vit.spec.layers[1:]] == ["avg", "avg"]


def test_unknown_layer_names_the_close_ones() -> None:
    with pytest.raises(
        ValueError, match=r"unknown layer 'layer5'.*Did you mean layer.*lookalike layers"
    ):
        get_backbone(**TINY, layers=["layer5"], device="cpu")


def test_pooling_choices() -> None:
    maps = torch.rand(2, 8, 3, 3)
    avg, top, gem = (pool(maps, how) for how in ("avg", "max", "gem"))
    torch.testing.assert_close(avg, maps.mean(dim=(2, 3)))
    torch.testing.assert_close(top, maps.amax(dim=(2, 3)))
    assert torch.all(avg <= gem + 1e-6) and torch.all(gem <= top + 1e-6)  # GeM sits between
    tokens = torch.rand(2, 5, 8)
    torch.testing.assert_close(pool(tokens, "cls"), tokens[:, 0])
    torch.testing.assert_close(pool(tokens, "avg"), tokens.mean(dim=1))
    with pytest.raises(ValueError, match="needs a token sequence"):
        pool(maps, "cls")
    with pytest.raises(ValueError, match="unknown pooling"):
        pool(maps, "median")


@pytest.mark.slow
def test_vit_token_layers_pool_to_vectors() -> None:
    with get_backbone(
        "timm:vit_tiny_patch16_224",
        weights=None,
        layers=["blocks.5", "embedding"],
        pooling="cls",
        device="cpu",
    ) as backbone:
        assert backbone.spec.dims == {"blocks.5": 192, "embedding": 192}


def test_list_layers_reports_output_shapes() -> None:
    rows = {name: (kind, shape) for name, kind, shape in list_layers("resnet18", image_size=64)}
    assert rows["layer4"] == ("Sequential", (512, 2, 2))
    assert rows["layer1.0.conv1"] == ("Conv2d", (64, 16, 16))
    assert rows["fc"][0] == "Identity"
