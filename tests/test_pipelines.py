"""Pipelines as data: the notebook presets as op lists give the tensors of the code they replaced (transcribed
below as it was), bit for bit; custom lists, sizes from Arch.img_size, the model's eval crop, refusals."""
import random

import numpy as np
import paddle
import paddle.vision.transforms as T
import pytest
from PIL import Image

from ppvit.constants import IMAGENET_DEFAULT_MEAN as M, IMAGENET_DEFAULT_STD as S
from ppvit.data import DataError, build_transform, create_transform, pipeline_spec
from ppvit.engine.config import ConfigError, validate


# ---------------------------------------------------------------- the pipelines as code, before they were data
def _old(name, mode, size):
    if name == "convit":
        return T.Compose([T.Resize(size=(size, size)), T.Normalize(mean=list(M), std=list(S), data_format="HWC"),
                          T.ToTensor()])
    if mode == "test" or name == "basic":
        return T.Compose([T.Resize((size, size)), T.ToTensor(), T.Normalize(mean=M, std=S)])
    if name == "conv2former_cifar":
        return T.Compose([T.Resize((size, size)), T.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
                          T.RandomResizedCrop(size, scale=(0.6, 1.0)), T.RandomErasing(), T.RandomHorizontalFlip(0.5),
                          T.RandomRotation(20), T.ToTensor(), T.Normalize(mean=M, std=S)])
    pre = int(round(size * 230 / 224))
    return T.Compose([T.Resize((pre, pre)), T.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
                      T.RandomResizedCrop(size, scale=(0.6, 1.0)), T.RandomHorizontalFlip(0.5), T.RandomRotation(20),
                      T.ToTensor(), T.Normalize(mean=M, std=S)])


def _image(h=40, w=36, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3)).astype(np.uint8)


@pytest.mark.parametrize("name", ["conv2former_cifar", "convit", "dilateformer", "basic"])
@pytest.mark.parametrize("mode", ["train", "test"])
def test_presets_give_the_old_tensors_bit_for_bit(name, mode):
    backend = pipeline_spec({"transform": name}, mode)[0]
    for size in (32, 48):
        ours, old = build_transform(name, mode, size), _old(name, mode, size)
        for seed in range(3):
            img = _image(seed=seed)
            if backend == "pil":
                img = Image.fromarray(img)
            random.seed(seed), np.random.seed(seed), paddle.seed(seed)
            a = np.asarray(ours(img))
            random.seed(seed), np.random.seed(seed), paddle.seed(seed)
            b = np.asarray(old(img))
            assert a.shape == (3, size, size)
            np.testing.assert_array_equal(a, b)


def _data(**kw):
    return {"transform": "basic", "image_size": 24, **kw}


def test_custom_list_takes_size_and_model_cfg_from_the_run():
    ops = [{"TimmResizeShorter": {}}, {"TimmCenterCrop": {}}, {"TimmNormalize": {}}]
    backend, resolved = pipeline_spec(_data(eval_ops=ops, image_backend="pil", arch="convit_tiny"), "test")
    assert backend == "pil"
    # convit_tiny's pretrained_cfg: bicubic, crop_pct 0.875 -> shorter side floor(24 / 0.875) = 27
    assert resolved == [{"TimmResizeShorter": {"size": 27, "interpolation": "bicubic"}},
                        {"TimmCenterCrop": {"size": 24}}, {"TimmNormalize": {"mean": list(M), "std": list(S)}}]
    t = build_transform(_data(eval_ops=ops, image_backend="pil", arch="convit_tiny"), "test")
    img = Image.fromarray(_image())
    want = create_transform(24, crop_pct=0.875, interpolation="bicubic")(img)
    np.testing.assert_array_equal(t(img), want)
    assert build_transform(_data(eval_ops=ops, image_backend="pil", image_size=64), "test")(img).shape == (3, 64, 64)


def test_train_list_with_timm_ops_runs_and_follows_img_size():
    ops = [{"TimmRandomResizedCrop": {"interpolation": "random"}}, {"TimmHorizontalFlip": {}},
           {"TimmAutoAugment": {"config_str": "rand-m9-mstd0.5-inc1"}}, {"TimmNormalize": {}},
           {"TimmRandomErasing": {"probability": 1.0, "mode": "pixel"}}]
    t = build_transform(_data(train_ops=ops, image_backend="pil", image_size=40), "train")
    random.seed(0), np.random.seed(0)
    x = t(Image.fromarray(_image()))
    assert x.shape == (3, 40, 40) and x.dtype == np.float32
    whole = build_transform(_data(train_ops=[{"CreateTransform": {"auto_augment": "rand-m12-n2", "re_prob": 0.25}}],
                                  image_backend="pil", image_size=40), "train")
    assert whole(Image.fromarray(_image())).shape == (3, 40, 40)


def test_bad_lists_are_refused_with_the_fix():
    with pytest.raises(DataError, match="unknown op 'Resise' \\(did you mean Resize\\?\\)"):
        pipeline_spec(_data(train_ops=[{"Resise": {}}]), "train")
    with pytest.raises(DataError, match="Resize takes no argument sise"):
        pipeline_spec(_data(train_ops=[{"Resize": {"sise": 3}}]), "train")
    with pytest.raises(DataError, match="TimmHorizontalFlip work on PIL images; set Data.image_backend: pil"):
        pipeline_spec(_data(train_ops=[{"TimmHorizontalFlip": {}}, {"TimmNormalize": {}}]), "train")
    with pytest.raises(DataError, match="Data.eval_ops must be a non-empty list"):
        pipeline_spec(_data(eval_ops=[]), "test")
    cfg = {"Global": {"epochs": 1}, "Arch": {"name": "convmixer_256_8", "num_classes": 10},
           "Optimizer": {"lr": 0.1}, "Data": {"batch_size": 2, "eval_batch_size": 2, "eval_ops": [{"Nope": None}]}}
    with pytest.raises(ConfigError, match="Data.eval_ops: unknown op 'Nope'"):
        validate(cfg)
    cfg["Data"]["eval_ops"] = [{"Resize": {}}]
    with pytest.raises(ConfigError, match="Data.eval_ops must end with its normalisation"):
        validate(cfg)


def test_repeated_augmentation_sampler_deals_copies_to_ranks():
    """DeiT's RASampler: each index 3 times in a row, dealt round-robin, an epoch as long as a plain one."""
    from ppvit.engine.sampler import RepeatedAugIndices

    ranks = [RepeatedAugIndices(10, 3, num_replicas=2, rank=r) for r in range(2)]
    epoch = [r.indices(7) for r in ranks]
    assert [len(e) for e in epoch] == [5, 5]  # 10 images / 2 ranks: as many samples as a plain epoch
    full = RepeatedAugIndices(10, 3).indices(7)
    order = full[::3][:10]
    assert sorted(set(full)) == sorted(set(order)) and all(full[i] == full[i // 3 * 3] for i in range(len(full)))
    # copies of one image land on different ranks (consecutive positions alternate between the 2 ranks)
    assert epoch[0][0] == epoch[1][0] == full[0] and epoch[0][1] == full[2] and epoch[1][1] == full[3]
    assert RepeatedAugIndices(10, 3).indices(8) != full  # reshuffled every epoch
    assert len(RepeatedAugIndices(600, 3, num_replicas=2)) == 256  # DeiT's rounding: 600 // 256 * 256 / 2
