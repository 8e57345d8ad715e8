"""The MAC counter behind scripts/model_zoo.py: tiny layers against their analytic counts, two models
against hand-derived formulas, and the model-zoo script on one small model."""
import os
import subprocess
import sys

import paddle
import paddle.nn as nn
import paddle.nn.functional as F
import pytest

import ppvit
from ppvit.models.profile import FlopCounter, count_flops, count_params, einsum_macs, matmul_macs

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def test_conv_counts_output_positions_times_kernel_and_group_width():
    conv = nn.Conv2D(4, 8, 3, stride=2, padding=1, groups=2)  # 9x9 -> 5x5, 2 input channels per group
    assert count_flops(conv, (2, 4, 9, 9)) == 2 * 8 * 5 * 5 * (4 // 2) * 3 * 3
    dw = nn.Conv2D(6, 6, 5, padding=2, groups=6)
    assert count_flops(dw, (1, 6, 7, 7)) == 6 * 7 * 7 * 5 * 5


def test_linear_counts_every_token_once():
    # nn.Linear goes through F.linear: counted once, not once per layer hook and once per functional call
    total, kinds = count_flops(nn.Linear(5, 7), (2, 3, 5), by_kind=True)
    assert total == 2 * 3 * 5 * 7
    assert kinds == {"linear": 2 * 3 * 5 * 7}


def test_functional_products_are_counted():
    x, y = paddle.randn([2, 3, 4, 5]), paddle.randn([2, 3, 6, 5])
    expected = 2 * 3 * 4 * 5 * 6  # [4, 5] x [5, 6] per (2, 3) batch
    cases = [
        lambda: paddle.matmul(x, y, transpose_y=True),
        lambda: x @ y.transpose([0, 1, 3, 2]),
        lambda: x.matmul(y, transpose_y=True),
        lambda: paddle.bmm(x.reshape([6, 4, 5]), y.reshape([6, 6, 5]).transpose([0, 2, 1])),
        lambda: paddle.einsum("bhik,bhjk->bhij", x, y),
    ]
    for op in cases:
        with FlopCounter(nn.Layer()) as counter:
            op()
        assert counter.by_kind == {"matmul": expected}
    # broadcast batch dims and vectors
    assert matmul_macs([3, 1, 4, 5], [2, 5, 6]) == 3 * 2 * 4 * 5 * 6
    assert matmul_macs([5], [5, 6]) == 5 * 6
    assert einsum_macs("...ij,...jk->...ik", [7, 4, 5], [7, 5, 6]) == 7 * 4 * 5 * 6


def test_patches_are_removed_even_after_an_error():
    originals = (paddle.matmul, F.linear, paddle.Tensor.__matmul__, paddle.einsum)
    with pytest.raises(RuntimeError):
        with FlopCounter(nn.Linear(2, 2)):
            assert paddle.matmul is not originals[0]
            raise RuntimeError("boom")
    assert (paddle.matmul, F.linear, paddle.Tensor.__matmul__, paddle.einsum) == originals
    layer = nn.Linear(2, 2)
    with FlopCounter(layer):
        pass
    assert count_flops(layer, (1, 2)) == 4 and not layer._forward_post_hooks


def test_convmixer_256_8_matches_the_formula():
    # 32x32 input, patch 2 -> 16x16 = 256 positions of 256 channels; kernel 5; 10 classes
    model = ppvit.create_model("convmixer_256_8")
    pos, dim, depth = 16 * 16, 256, 8
    expected = pos * dim * 3 * 2 * 2 + depth * (pos * dim * 5 * 5 + pos * dim * dim) + dim * 10
    assert count_flops(model, (1, 3, 32, 32)) == expected
    # also the parameter count: patch conv, BN, depth x (dw conv, BN, pw conv, BN), classifier
    params = (dim * 3 * 4 + dim) + 2 * dim + depth * ((dim * 25 + dim) + 2 * dim + (dim * dim + dim) + 2 * dim) \
        + dim * 10 + 10
    assert count_params(model) == params


def test_reduced_convit_matches_the_formula_with_attention():
    B, C, heads, N, classes = 2, 4 * 48, 4, 16, 10  # 32x32 input, 8x8 patches -> 4x4 grid
    model = ppvit.create_model("convit_tiny", img_size=32, patch_size=8, depth=3, local_up_to_layer=2,
                               num_classes=classes)
    total, kinds = count_flops(model, (B, 3, 32, 32), by_kind=True)
    gpsa = (B * N * C * 2 * C + B * N * C * C + B * N * C * C  # qk, v, proj
            + 2 * B * N * N * C  # q.k and attn.v over all heads
            + N * N * 3 * heads  # positional scores: computed once, shared by the batch
            + 8 * B * N * C * C)  # MLP
    T = N + 1  # the cls token joins the MHSA blocks
    mhsa = 4 * B * T * C * C + 2 * B * T * T * C + 8 * B * T * C * C
    expected = B * N * C * 3 * 8 * 8 + 2 * gpsa + mhsa + B * C * classes
    assert total == expected
    assert kinds["matmul"] == 2 * 2 * B * N * N * C + 2 * B * T * T * C


def test_dilated_attention_is_counted_as_the_papers_matmuls():
    from ppvit.models.dilateformer import MultiDilatelocalAttention

    B, H, W, C = 2, 6, 7, 24
    attn = MultiDilatelocalAttention(C, num_heads=3, qkv_bias=True, kernel_size=3, dilation=(1, 2, 3))
    total, kinds = count_flops(attn, (B, H, W, C), by_kind=True)
    tokens = B * H * W
    # each query: 3x3 scores and 3x3 weighted values per channel, whatever the dilation
    assert kinds["attention"] == 2 * tokens * C * 3 * 3
    assert total == tokens * C * 3 * C + 2 * tokens * C * 9 + tokens * C * C


def test_model_zoo_script_prints_a_markdown_row():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "model_zoo.py"), "--markdown",
                          "--models", "convmixer_256_8"], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=ROOT))  # scripts import the installed ppvit, or this one
    assert out.returncode == 0, out.stderr
    # Paddle's import notices are filtered, as in the tools (quiet_paddle_import)
    assert "No ccache found" not in out.stderr and "OMP_NUM_THREADS set to" not in out.stderr, out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith("| `convmixer_256_8`")]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    model = ppvit.create_model("convmixer_256_8")
    assert cells[1] == f"{count_params(model) / 1e6:.2f}"
    assert cells[2] == f"{count_flops(model, (1, 3, 32, 32)) / 1e9:.2f}"
    assert cells[4] == "32x32" and cells[5] == "10"


def test_norm_layers_only_when_asked():
    bn = nn.BatchNorm2D(4)
    assert count_flops(bn, (2, 4, 3, 3)) == 0
    assert count_flops(bn, (2, 4, 3, 3), include_norm=True) == 2 * 4 * 3 * 3


@pytest.mark.parametrize("name, paper_gflops", [("conv2former_t", 4.4), ("dilateformer_t", 3.2)])
def test_full_size_counts_agree_with_the_papers(name, paper_gflops):
    # the papers' "FLOPs" are MACs; these two models are the papers' own networks at 224x224
    macs = count_flops(ppvit.create_model(name), (1, 3, 224, 224))
    assert abs(macs / 1e9 - paper_gflops) / paper_gflops < 0.02
