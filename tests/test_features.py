"""timm's feature API on every family: ``features_only`` backbones, ``feature_info`` and ``forward_intermediates``;
``default_cfg`` and ``list_models(filter, pretrained)``."""
import logging

import numpy as np
import paddle
import pytest

import ppvit
from ppvit.io import save_state
from ppvit.models.features import FeatureInfo, default_out_indices, feature_take_indices

# the smallest variant of each family at a small input it accepts (fixed-size models are built for it)
CASES = {
    "conv2former_n_cifar": ({}, 16),
    "conv2former_n": ({}, 32),
    "convit_tiny": ({"img_size": 32}, 32),
    "coatnet_0": ({"img_size": 32}, 32),
    "convmixer_256_8": ({}, 16),
    "dilateformer_t": ({"img_size": 32}, 32),
}


def _module_outputs(model, names, x):
    """The outputs of the sublayers ``names`` during a plain ``model(x)``, caught by forward hooks."""
    layers = dict(model.named_sublayers())
    caught, hooks = {}, []
    for name in names:
        def hook(layer, inputs, output, name=name):
            caught[name] = output.numpy()
        hooks.append(layers[name].register_forward_post_hook(hook))
    model(x)
    for h in hooks:
        h.remove()
    return caught


def _as_map(model, output, size):
    """A hooked module's output as the NCHW map forward_intermediates gives: ConViT's tokens (cls token left out)
    laid on the patch grid; the others' outputs are maps already."""
    if output.ndim == 4:
        return output
    grid = size // model.patch_embed.patch_size[0]
    tokens = output[:, -grid * grid:]  # B, N, C (the cls token, when there, is first)
    return tokens.transpose(0, 2, 1).reshape(tokens.shape[0], -1, grid, grid)


@pytest.mark.parametrize("name", list(CASES))
def test_forward_intermediates_and_features_only(name, tmp_path):
    kwargs, size = CASES[name]
    model = ppvit.create_model(name, **kwargs)
    model.eval()
    x = paddle.randn([2, 3, size, size])
    info = model.feature_info
    assert info and all(set(f) == {"num_chs", "reduction", "module"} for f in info)

    final, maps = model.forward_intermediates(x)
    # the final output is forward_features' (exactly), so forward_head(final) gives the logits
    np.testing.assert_array_equal(final.numpy(), model.forward_features(x).numpy())
    assert len(maps) == len(info)
    for m, f in zip(maps, info):
        assert m.shape == [2, f["num_chs"], size // f["reduction"], size // f["reduction"]], (f, m.shape)
    # each map is the output of the module feature_info names, in the model's own forward pass
    caught = _module_outputs(model, [f["module"] for f in info], x)
    for m, f in zip(maps, info):
        np.testing.assert_allclose(m.numpy(), _as_map(model, caught[f["module"]], size), rtol=0, atol=1e-6,
                                   err_msg=f["module"])

    # timm's indices: an int takes the last n levels; stop_early computes no further than the last one taken
    last2 = model.forward_intermediates(x, indices=2, intermediates_only=True)
    for a, b in zip(last2, maps[-2:]):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    first = model.forward_intermediates(x, indices=[0], stop_early=True, intermediates_only=True)
    np.testing.assert_array_equal(first[0].numpy(), maps[0].numpy())
    nhwc = model.forward_intermediates(x, indices=[-1], output_fmt="NHWC", intermediates_only=True)[0]
    np.testing.assert_array_equal(nhwc.numpy(), maps[-1].numpy().transpose(0, 2, 3, 1))

    # the backbone: create_model(features_only=True) with the same weights gives the same maps
    path = tmp_path / "w.pdparams"
    save_state(model.state_dict(), path)
    backbone = ppvit.create_model(name, pretrained=str(path), features_only=True, out_indices=(0, -1), **kwargs)
    backbone.eval()
    assert isinstance(backbone.feature_info, FeatureInfo)
    assert backbone.feature_info.out_indices == (0, len(info) - 1)
    assert backbone.feature_info.channels() == [info[0]["num_chs"], info[-1]["num_chs"]]
    assert backbone.feature_info.reduction() == [info[0]["reduction"], info[-1]["reduction"]]
    outs = backbone(x)
    assert isinstance(outs, list) and len(outs) == 2
    for o, c, r, ref in zip(outs, backbone.feature_info.channels(), backbone.feature_info.reduction(),
                            (maps[0], maps[-1])):
        assert o.shape == [2, c, size // r, size // r]
        np.testing.assert_array_equal(o.numpy(), ref.numpy())
    assert backbone.default_cfg["architecture"] == name


def test_default_levels_hierarchical_all_isotropic_last_three():
    backbone = ppvit.create_model("convmixer_256_8", features_only=True)  # 8 blocks at one stride
    assert backbone.feature_info.out_indices == (5, 6, 7)
    outs = backbone(paddle.randn([2, 3, 16, 16]))
    assert [o.shape for o in outs] == [[2, 256, 8, 8]] * 3
    assert default_out_indices([{"reduction": r} for r in (4, 8, 16, 32)]) == 4
    # the backbone trains: every level's gradient reaches the stem
    backbone.train()
    sum(o.mean() for o in backbone(paddle.randn([2, 3, 16, 16]))).backward()
    assert np.abs(backbone.model[0].weight.grad.numpy()).sum() > 0
    assert backbone.model.get_classifier().__class__.__name__ == "Identity"  # no unused head in a backbone


def test_bad_out_indices_say_what_the_model_has():
    with pytest.raises(ValueError,
                       match=r"out_indices for convmixer_256_8=\(8,\).*8 feature levels \(3 \.\. 10\).*-8\.\.7"):
        ppvit.create_model("convmixer_256_8", features_only=True, out_indices=(8,))
    with pytest.raises(ValueError, match="names a level twice"):
        ppvit.create_model("convmixer_256_8", features_only=True, out_indices=[1, -7])
    with pytest.raises(ValueError, match=r"count of the last levels in 1\.\.8"):
        ppvit.create_model("convmixer_256_8", features_only=True, out_indices=9)
    with pytest.raises(ValueError, match="pass features_only=True"):
        ppvit.create_model("convmixer_256_8", out_indices=(1,))
    assert feature_take_indices(4, (-1, 1)) == ([1, 3], 3)


def test_default_cfg_and_list_models_as_timm(caplog):
    model = ppvit.create_model("convmixer_256_8")
    assert model.default_cfg is model.pretrained_cfg and model.default_cfg["input_size"] == (3, 32, 32)
    assert ppvit.list_models(filter="convit_*") == ["convit_base", "convit_small", "convit_tiny"]
    assert ppvit.list_models(["convit_t*", "coatnet_0"]) == ["coatnet_0", "convit_tiny"]
    assert ppvit.list_models("convit_*", exclude_filters="*_base") == ["convit_small", "convit_tiny"]
    assert ppvit.list_models() == sorted(ppvit.list_models(""))
    with caplog.at_level(logging.WARNING, logger="ppvit"):
        assert ppvit.list_models(pretrained=True) == []
    assert "ships no pretrained weights" in caplog.text


def _python_blocks(path):
    import re

    with open(path, encoding="utf-8") as f:
        return re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)


def test_backbones_page_runs_as_written(capsys):
    """Every python block of docs/backbones.md runs, and prints what its ``# ...`` comments say it prints."""
    import os
    import re

    from conftest import ROOT

    blocks = _python_blocks(os.path.join(ROOT, "docs", "backbones.md"))
    assert len(blocks) == 4
    for code in blocks:
        exec(compile(code, "docs/backbones.md", "exec"), {"__name__": "docs"})
        printed = capsys.readouterr().out.splitlines()
        calls = re.findall(r"^print\(.*\)[ \t]*(?:# (.*))?$", code, flags=re.M)  # one line printed per call
        assert len(printed) == len(calls) and any(calls), (code, printed)
        for claim, line in zip(calls, printed):
            if claim:
                assert line.replace(" ", "") == claim.replace(" ", ""), (claim, line)
