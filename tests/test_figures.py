"""The pictures say what they show: the confusion matrix's colour bar, the accuracy curve in % (as the logs),
prediction grids that explain pred/true and name their files, LIME figures with a legend and a warning when
the image has too few superpixels for LIME to mean anything."""
import os
import warnings

import numpy as np
import pytest

from ppvit.data import build_dataset, denormalize
from ppvit.engine import load_config, plot_confusion_matrix, plot_learning_curve
from ppvit.explain import LimeImageExplainer, prediction_grid
from ppvit.explain.lime import QUICKSHIFT_INTERPRETDL, FewSuperpixelsWarning
from ppvit.explain.plots import lime_figure
from tests.conftest import ROOT

QUICKSTART = os.path.join(ROOT, "configs", "quickstart.yaml")


def _texts(fig):
    return [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))]


def test_confusion_matrix_colour_bar_is_labelled(tmp_path):
    matrix = np.array([[5, 1], [2, 7]])
    fig = plot_confusion_matrix(matrix, ["cat", "dog"], tmp_path / "cm.png")
    image_ax, bar_ax = fig.axes
    assert "share of the true class's images" in bar_ax.get_ylabel() and "image counts" in bar_ax.get_ylabel()
    assert (image_ax.get_xlabel(), image_ax.get_ylabel()) == ("predicted", "true")
    assert (tmp_path / "cm.png").stat().st_size > 1000


def test_accuracy_curve_is_in_percent(tmp_path):
    record = {"train": {"acc": [0.3, 0.9], "iter": [1, 2]}, "val": {"acc": [0.5, 0.99], "iter": [1, 2]}}
    fig = plot_learning_curve(record, "acc", "Top-1 accuracy (%)", "Epoch", tmp_path / "acc.png", percent=True)
    ax = fig.axes[0]
    assert ax.get_ylabel() == "Top-1 accuracy (%)"
    assert [list(line.get_ydata()) for line in ax.get_lines()] == [[30.0, 90.0], [50.0, 99.0]]
    assert ax.get_ylim()[1] <= 100.5 and ax.get_ylim()[0] == pytest.approx(27.0)
    assert all(float(t).is_integer() for t in ax.get_xticks())  # whole epochs


def test_training_writes_the_accuracy_curve_in_percent(tmp_path, monkeypatch):
    import ppvit.engine.trainer as trainer

    seen = {}
    original = trainer.plot_learning_curve

    def spy(record, title, *args, **kwargs):
        fig = original(record, title, *args, **kwargs)
        seen[title] = fig
        return fig

    monkeypatch.setattr(trainer, "plot_learning_curve", spy)
    trainer_cfg = [f"Global.output_dir={tmp_path}", "Global.epochs=1", "Data.limit=64", "Data.batch_size=32"]
    from ppvit.engine import train

    hist = train(QUICKSTART, trainer_cfg)
    ax = seen["acc"].axes[0]
    assert ax.get_ylabel() == "Top-1 accuracy (%)"
    val_line = ax.get_lines()[1]
    assert val_line.get_ydata()[0] == pytest.approx(100 * hist["epochs"]["val_top1"][0])


def _digits(n):
    cfg = load_config(QUICKSTART, ["Data.limit=16"])
    ds = build_dataset(cfg["Data"], "test", cfg["Arch"]["img_size"])
    images = [np.rint(denormalize(ds[i][0], "basic") * 255).astype(np.uint8) for i in range(n)]
    return images, [int(np.ravel(ds[i][1])[0]) for i in range(n)]


def test_grids_explain_pred_and_true_and_name_files():
    images, labels = _digits(4)
    pred = [labels[0], labels[1], (labels[2] + 1) % 10, labels[3]]
    fig = prediction_grid(images, pred, labels, class_names=[f"d{i}" for i in range(10)], title="test images")
    assert fig._suptitle.get_text() == ("test images\npred: predicted class, true: ground truth; "
                                        "green = right, red (framed) = wrong")
    assert fig.axes[2].get_title() == f"pred: d{pred[2]}\ntrue: d{labels[2]}"
    fig = prediction_grid(images, pred, labels, probs=[0.5] * 4)  # as tools/eval.py draws it
    assert fig._suptitle.get_text() == ("pred: predicted class (its probability), true: ground truth; "
                                        "green = right, red (framed) = wrong")
    assert fig.axes[2].get_title() == f"pred: {pred[2]} (0.50)\ntrue: {labels[2]}"
    # image files: no truth; their names under the images (long ones shortened)
    names = ["a.png", "b.png", "a_very_long_photo_name_from_a_camera_0001.jpg", "d.png"]
    fig = prediction_grid(images, pred, probs=[0.9] * 4, captions=names, ncols=6, scale=2.4)
    assert fig._suptitle.get_text() == "pred: predicted class (its probability)"
    captions = [ax.get_xlabel() for ax in fig.axes]
    assert captions[:2] == ["a.png", "b.png"] and captions[2].endswith("_0001.jpg") and len(captions[2]) <= 22
    assert fig.get_size_inches()[0] == pytest.approx(4 * 2.4)  # 4 images in one row, 2.4 inches each
    with pytest.raises(ValueError, match="same length"):
        prediction_grid(images, pred, captions=names[:2])


def _brightness_predict_fn(images):
    g = np.asarray(images, np.float64).mean(axis=(1, 2, 3)) / 255.0
    return np.stack([g, 1.0 - g], axis=1)


def test_lime_warns_on_the_quick_start_images_and_says_how_to_get_more():
    images, _ = _digits(1)  # 16x16: quickshift with interpretdl's arguments finds 1-4 superpixels
    explainer = LimeImageExplainer(_brightness_predict_fn, random_seed=0, progress=False,
                                   quickshift_kwargs=QUICKSHIFT_INTERPRETDL)
    with pytest.warns(FewSuperpixelsWarning) as caught:
        explainer.interpret(images[0], interpret_class=0, num_samples=20, visual=False)
    message = str(caught[0].message)
    assert "16x16" in message and "fewer than 10" in message
    for hint in ("kernel_size", "max_dist", "-o Explain.kernel_size=2", "resize_to", "quickshift_kwargs unset"):
        assert hint in message, message
    # the advice works: no warning with the arguments it names
    finer = LimeImageExplainer(_brightness_predict_fn, random_seed=0, progress=False,
                               quickshift_kwargs=dict(kernel_size=2, max_dist=4, ratio=1.0, sigma=1))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FewSuperpixelsWarning)
        finer.interpret(images[0], interpret_class=0, num_samples=20, visual=False)
    assert finer.lime_results["segmentation"].max() + 1 >= 10


def test_explain_config_keys_reach_quickshift():
    from ppvit.commands.explain import quickshift_kwargs

    cfg = load_config(QUICKSTART, ["Explain.kernel_size=2", "Explain.max_dist=4"])
    assert quickshift_kwargs(cfg["Explain"], 16) == dict(kernel_size=2.0, max_dist=4.0, ratio=1.0, sigma=1)
    cfg = load_config(QUICKSTART, ["Explain.ratio=0.5"])  # the others: scaled to the image
    assert quickshift_kwargs(cfg["Explain"], 36) == dict(kernel_size=3.0, max_dist=6.0, ratio=0.5, sigma=1)
    assert quickshift_kwargs(cfg["Explain"], 224) == dict(kernel_size=5, max_dist=10, ratio=0.5, sigma=1)
    assert quickshift_kwargs(load_config(QUICKSTART)["Explain"], 16) is None  # the explainer scales them


def _explained_digit():
    """A LIME explainer that explained classes 0 and 1 ("dark", "bright") of one digit image."""
    images, _ = _digits(1)
    explainer = LimeImageExplainer(_brightness_predict_fn, random_seed=0, progress=False,
                                   quickshift_kwargs=dict(kernel_size=2, max_dist=4, ratio=1.0, sigma=1))
    explainer.interpret(images[0], interpret_class=[0, 1], num_samples=30, visual=False)
    return explainer


def test_lime_figure_has_a_legend_for_the_overlay(tmp_path):
    explainer = _explained_digit()
    res = explainer.lime_results
    fig = lime_figure(res["input"], res["segmentation"], res["lime_weights"], class_names=["dark", "bright"])
    legend = fig.legends[0]
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels[0].startswith("raises the class's probability most (positive LIME weight, top 20%")
    assert any("superpixel boundaries" in t for t in labels) and any("dimmed" in t for t in labels)
    assert "LIME: dark" in _texts(fig) and "LIME: bright" in _texts(fig)
    path = explainer.save_figure(tmp_path / "lime.png", class_names=["dark", "bright"])
    assert os.path.getsize(path) > 1000


@pytest.mark.parametrize("classes", [[0], [0, 1]])
def test_lime_figure_legend_fits_inside_the_figure(classes):
    """The legend below the panels is drawn whole (its long labels once ran past a 3-panel figure's edge)."""
    res = _explained_digit().lime_results
    fig = lime_figure(res["input"], res["segmentation"], res["lime_weights"], classes=classes,
                      class_names=["dark", "bright"], title="a title")
    fig.canvas.draw()
    box, page = fig.legends[0].get_window_extent(fig.canvas.get_renderer()), fig.bbox
    assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 and box.y1 <= page.y1, (box, page)


@pytest.mark.parametrize("size", [16, 32])
def test_lime_default_superpixels_scale_with_the_image(size):
    """Default arguments: at least 10 superpixels on 16 and 32 px digits and photos (interpretdl's arguments
    find fewer on most of them); explicit arguments are used as given."""
    import cv2
    import skimage.data

    from ppvit.explain.lime import MIN_SUPERPIXELS, scaled_quickshift_kwargs

    digits, _ = _digits(6)
    photos = [cv2.resize(getattr(skimage.data, n)(), (size, size), interpolation=cv2.INTER_AREA)
              for n in ("chelsea", "astronaut", "coffee", "rocket")]
    images = [cv2.resize(d, (size, size), interpolation=cv2.INTER_AREA) for d in digits] + photos
    fewer_with_interpretdl = 0
    for image in images:
        scaled = LimeImageExplainer(_brightness_predict_fn, random_seed=0, progress=False)
        with warnings.catch_warnings():
            warnings.simplefilter("error", FewSuperpixelsWarning)
            scaled.interpret(image, interpret_class=0, num_samples=20, visual=False)
        assert scaled.lime_results["segmentation"].max() + 1 >= MIN_SUPERPIXELS
        assert scaled.segment_kwargs == scaled.lime_results["quickshift_kwargs"]
        assert scaled.segment_kwargs["kernel_size"] < QUICKSHIFT_INTERPRETDL["kernel_size"]
        explicit = LimeImageExplainer(_brightness_predict_fn, random_seed=0, progress=False,
                                      quickshift_kwargs=QUICKSHIFT_INTERPRETDL)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FewSuperpixelsWarning)
            explicit.interpret(image, interpret_class=0, num_samples=20, visual=False)
        assert explicit.segment_kwargs == QUICKSHIFT_INTERPRETDL
        fewer_with_interpretdl += explicit.lime_results["segmentation"].max() + 1 < MIN_SUPERPIXELS
    assert fewer_with_interpretdl >= len(images) // 2  # what the scaling fixes
    # ImageNet-sized images keep interpretdl's arguments
    assert scaled_quickshift_kwargs((224, 224, 3)) == QUICKSHIFT_INTERPRETDL
    assert scaled_quickshift_kwargs((60, 80)) == QUICKSHIFT_INTERPRETDL
