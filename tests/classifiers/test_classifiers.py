"""Classifier adapters: stable layer names, affine stems, ViT heads, local-only weights, image folders."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torchvision
from safetensors.torch import save_file

from retina_codec.classifiers import (
    adapt_classifier,
    channel_dim,
    load_classifier,
    load_image_folder,
    resolve_layers,
)
from retina_codec.classifiers.adapters import HeadSplitAttention
from retina_codec.cli.main import main
from retina_codec.contributions import ContributionEngine, contributions
from retina_codec.errors import CheckpointError, LayerNotFoundError
from retina_codec.modes import ablate_mode

TORCH_THREADS = 1  # see conftest.py: tiny training runs are fastest on one thread


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def small_vit(num_classes: int = 5) -> torch.nn.Module:
    torch.manual_seed(0)
    v = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                             hidden_dim=16, mlp_dim=32, num_classes=num_classes)
    torch.nn.init.normal_(v.heads.head.weight)  # torchvision zero-initialises the head
    return v.eval()


# ------------------------------------------------------------------------------------------- ResNet
def test_resnet50_has_16_named_blocks_and_all_of_them_go_through_the_engine():
    m = load_classifier("resnet50", num_classes=10)
    blocks = resolve_layers(m, "blocks")
    assert blocks == [f"layer{i}.{j}" for i, n in zip(range(1, 5), (3, 4, 6, 3)) for j in range(n)]
    assert resolve_layers(m, None) == blocks
    assert resolve_layers(m, "block1,block16") == ["layer1.0", "layer4.2"]
    assert m.affine_stem == ("conv1", "bn1")
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    r = contributions(m, x, blocks, target="top1_logit", steps=4, batch_size=2, quiet=True)
    widths = [256] * 3 + [512] * 4 + [1024] * 6 + [2048] * 3
    assert [r.layers[b].shape for b in blocks] == [(2, 2 * w) for w in widths]
    assert all(np.isfinite(r.layers[b]).all() for b in blocks)
    # the last block cuts every path to the logits through a linear read-out: completeness holds there
    assert r.summary()["layer4.2"]["total_rel"] < 1e-4
    assert r.settings["affine_stem"] == ["conv1", "bn1"]


def test_resnet_affine_stem_gives_the_same_contributions_as_the_full_path():
    m = load_classifier("torchvision:resnet18", num_classes=4)
    with torch.no_grad():  # non-trivial eval statistics, so BN is a real affine map
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 2.0)
                mod.bias.uniform_(-0.1, 0.1)
    torch.manual_seed(1)
    x = torch.randn(2, 3, 48, 48)
    out = {}
    for stem in ("auto", ()):
        with ContributionEngine.from_settings(m, ["layer2.1", "layer4.1"], "contrastive", steps=5, stem=stem,
                                device="cpu") as eng:
            out[stem] = eng.compute(x)
    for name in ("layer2.1", "layer4.1"):
        torch.testing.assert_close(out["auto"].contributions[name], out[()].contributions[name],
                                   rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------- ViT
def test_head_split_attention_reproduces_multihead_attention_and_keeps_state_dict_keys():
    v = small_vit()
    keys = list(v.state_dict())
    torch.manual_seed(2)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ref = v(x)
    adapt_classifier(v)
    assert isinstance(v.encoder.layers.encoder_layer_0.self_attention, HeadSplitAttention)
    assert list(v.state_dict()) == keys
    with torch.no_grad():
        torch.testing.assert_close(v(x), ref, rtol=1e-5, atol=1e-6)


def test_vit_layers_blocks_mlp_attention_heads_with_tokens_summed():
    v = adapt_classifier(small_vit())
    assert resolve_layers(v, None) == ["encoder.layers.encoder_layer_0", "encoder.layers.encoder_layer_1"]
    layers = resolve_layers(v, "block1,mlp1,attn1,heads1")
    assert layers == ["encoder.layers.encoder_layer_1", "encoder.layers.encoder_layer_1.mlp.1",
                      "encoder.layers.encoder_layer_1.dropout", "encoder.layers.encoder_layer_1.self_attention.heads"]
    assert [channel_dim(v, n) for n in layers] == [-1, -1, -1, 1]
    assert v.affine_stem == ("conv_proj",)
    torch.manual_seed(3)
    x = torch.randn(4, 3, 32, 32)
    r = contributions(v, x, layers, target="top1_logit", steps=10, quiet=True)
    assert [r.layers[n].shape for n in layers] == [(4, 32), (4, 64), (4, 32), (4, 4)]
    # the output projection is linear: heads and attention channels carry the same total contribution
    np.testing.assert_allclose(r.layers[layers[3]].sum(1), r.layers[layers[2]].sum(1), rtol=1e-4, atol=1e-5)


def test_vit_affine_stem_matches_the_full_path_and_heads_can_be_ablated():
    v = adapt_classifier(small_vit())
    torch.manual_seed(4)
    x = torch.randn(2, 3, 32, 32)
    heads = resolve_layers(v, "heads0")[0]
    res = {}
    for stem in ("auto", ()):
        with ContributionEngine.from_settings(v, [heads], "softmax_prob", steps=6, stem=stem, device="cpu") as eng:
            res[stem] = eng.compute(x).contributions[heads]
    torch.testing.assert_close(res["auto"], res[()], rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        base = v(x)
        with ablate_mode(v, heads, np.array([0.0, 1.0]), 0.5, ei_split=False, channel_dim=channel_dim(v, heads)):
            ablated = v(x)
    assert not torch.allclose(base, ablated)


def test_torchvision_vit_by_name_gets_twelve_blocks_and_48_named_layers():
    v = load_classifier("torchvision:vit_b_16", num_classes=3)
    assert len(v.layer_names) == 12 and len(v.layer_info) == 48
    assert v.preprocess["size"] == 224
    assert resolve_layers(v, "heads11") == ["encoder.layers.encoder_layer_11.self_attention.heads"]


def test_timm_models_are_adapted_when_timm_is_installed():
    timm = pytest.importorskip("timm")
    m = load_classifier("timm:vit_tiny_patch16_224", num_classes=3)
    assert len(resolve_layers(m, "blocks")) == len(m.blocks)
    assert resolve_layers(m, "mlp0") == ["blocks.0.mlp.act"]
    r = load_classifier("timm:resnet18", num_classes=3)
    assert resolve_layers(r, "blocks")[0] == "layer1.0"
    assert timm is not None


# ------------------------------------------------------------------------------------------ weights
def test_weights_come_from_a_local_safetensors_or_torch_file(tmp_path):
    torch.manual_seed(5)
    src = torchvision.models.resnet18(num_classes=3).eval()
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        ref = src(x)
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, tmp_path / "w.pt")
    for f in ("w.safetensors", "w.pt"):
        m = load_classifier("resnet18", weights=tmp_path / f, num_classes=3)
        with torch.no_grad():
            torch.testing.assert_close(m(x), ref)


def test_wrong_or_missing_weights_are_one_clear_error(tmp_path):
    save_file({"fc.weight": torch.zeros(3, 512)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(CheckpointError, match="missing"):
        load_classifier("resnet18", weights=tmp_path / "bad.safetensors", num_classes=3)
    with pytest.raises(CheckpointError, match="not found"):
        load_classifier("resnet18", weights=tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="unknown torchvision architecture"):
        load_classifier("torchvision:not_a_net")
    with pytest.raises(LayerNotFoundError, match="block1"):
        resolve_layers(load_classifier("resnet18", num_classes=2), "block99")


# ------------------------------------------------------------------------------------------- images
def _write_folder(root, classes=("cat", "dog"), n=3):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(root / c / f"{i}.png")


def test_image_folder_is_loaded_resized_and_normalised_for_the_model(tmp_path):
    _write_folder(tmp_path / "imgs")
    v = adapt_classifier(small_vit())
    s = load_image_folder(tmp_path / "imgs", v)
    assert s.x.shape == (6, 3, 32, 32) and s.class_names == ["cat", "dog"]
    assert s.y.tolist() == [0, 0, 0, 1, 1, 1]
    assert abs(float(s.x.mean())) < 1.0  # ImageNet normalisation applied
    s2 = load_image_folder(tmp_path / "imgs", v, max_per_class=2)
    assert s2.x.shape[0] == 4
    digits = load_classifier("digits-cnn")
    g = load_image_folder(tmp_path / "imgs", digits)
    assert g.x.shape == (6, 1, 16, 16)


def test_cli_errors_are_one_line_and_exit_2(tmp_path, capsys):
    assert main(["-q", "classify-stats", "resnet18", "digits", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--weights" in err
    assert main(["-q", "classify-stats", "digits-cnn", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "ImageFolder" in capsys.readouterr().err
    assert main(["-q", "classify-stats", "digits-cnn", "digits", "--layers", "block9", "--out",
                 str(tmp_path / "o")]) == 2
    assert "block9" in capsys.readouterr().err


def test_timm_vit_heads_are_hookable_and_carry_the_attention_output_total():
    timm = pytest.importorskip("timm")
    torch.manual_seed(4)
    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, num_classes=3)
    v = copy.deepcopy(ref)
    adapt_classifier(v)
    assert sorted(v.state_dict()) == sorted(ref.state_dict())
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(v.eval()(x), ref.eval()(x))
    layers = resolve_layers(v, "attn1,heads1")
    assert layers == ["blocks.1.attn", "blocks.1.attn.norm.heads"]
    assert channel_dim(v, layers[1]) == 1
    r = contributions(v, x, layers, target="top1_logit", steps=8, quiet=True)
    n_heads = v.blocks[1].attn.num_heads
    assert r.layers[layers[1]].shape == (3, 2 * n_heads)
    # the output projection is affine: heads and attention channels carry the same total contribution
    np.testing.assert_allclose(r.layers[layers[1]].sum(1), r.layers[layers[0]].sum(1), rtol=1e-4, atol=1e-5)
