"""``ppvit app`` (tools/app.py): a local web app (Gradio, as AI Studio apps run it) over the run's exported model.

Upload an image or pick an example; the app shows the top-k classes with their names (the exported model through
its verified backend, as ``ppvit infer``), then LIME and Grad-CAM explanations of the predicted class, each with its
faithfulness (deletion/insertion AUCs against a random ranking, ``ppvit.explain.faithfulness``). Grad-CAM needs
gradients, so it runs on the dygraph model with the weights the export was made from (``model_for_export``).

Offline: Gradio's analytics and version check are off, the theme uses the system's fonts (no font CDN), and the
server listens on App.host (127.0.0.1: this machine only) at App.port. Gradio is optional:
``pip install '.[app]'``.
"""
import os
import tempfile
import threading

import numpy as np

from ..engine.config import ConfigError, run_dir
from ..engine.logger import get_logger
from ..errors import PpvitError
from .common import class_names, image_files, lime_mean_std, open_predictor

# set before gradio is imported: no analytics, no version check, no Hugging Face calls
OFFLINE_ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
               "GRADIO_SSR_MODE": "False"}
DISPLAY = 224  # side of the explanation panels (small images are enlarged, nearest neighbour)


GRADIO_MISSING = ("ppvit app needs Gradio, which is optional: pip install 'ppvit[app]' (from a clone: "
                  "pip install '.[app]')")


def _check_gradio():
    """Refuse early, without importing it (seconds), when Gradio is not installed."""
    import importlib.util

    if importlib.util.find_spec("gradio") is None:
        raise ConfigError(GRADIO_MISSING)


def _import_gradio():
    for key, value in OFFLINE_ENV.items():
        os.environ[key] = value
    try:
        import gradio
    except ImportError:
        raise ConfigError(GRADIO_MISSING) from None
    return gradio


def _enlarge(image, side=DISPLAY):
    k = max(1, side // max(image.shape[:2]))
    return np.repeat(np.repeat(image, k, axis=0), k, axis=1)


def example_images(cfg, folder):
    """Example image files for the app: App.images (files and/or folders), else App.examples test images of the
    config's data, evenly spaced over the split, written to ``folder`` as PNG (none, logged, when that data is
    not there)."""
    import cv2

    app = cfg["App"]
    if app["images"]:
        return image_files(app["images"], "App.images")
    if not app["examples"]:
        return []
    from ..data import build_dataset, data_config, denormalize

    try:
        dataset = build_dataset(data_config(cfg), "test", cfg["Arch"]["img_size"])
    except PpvitError as e:
        get_logger().warning(f"no example images: {e}")
        return []
    paths = []
    # spread over the split (a folder dataset lists its images class by class)
    for i in np.unique(np.linspace(0, len(dataset) - 1, min(app["examples"], len(dataset))).round().astype(int)):
        chw, _ = dataset[i]
        rgb = np.rint(denormalize(chw, cfg["Data"]["transform"]) * 255.0).astype(np.uint8)
        path = os.path.join(folder, f"test_{i}.png")
        cv2.imwrite(path, np.ascontiguousarray(rgb[:, :, ::-1]))
        paths.append(path)
    return paths


class AppModel:
    """What the app runs, behind one lock (the predictor and the dygraph model are not thread-safe):
    ``classify(rgb) -> (model-size RGB uint8 image, probabilities)``, ``lime(image, c)`` and ``gradcam(image, c)``
    -> (overlay RGB uint8, faithfulness result)."""

    def __init__(self, cfg):
        from ..explain import GradCAM, predictor_predict_fn
        from .explain import model_for_export

        app, g = cfg["App"], cfg["Global"]
        self.log = get_logger()
        prefix = app["model"] or os.path.join(run_dir(cfg), "inference")
        self.predictor = open_predictor(prefix, g["device"], 64, "App.model", app["backend"], cfg=cfg)
        if not self.predictor.meta:
            raise ConfigError(f"App.model: {self.predictor.prefix} has no .meta.json (preprocessing unknown)")
        self.names = self.predictor.labels or class_names(cfg)
        self.mean, self.std = lime_mean_std(self.predictor.meta["preprocess"])
        self.predict_fn = predictor_predict_fn(self.predictor, self.mean, self.std)
        self.seed, self.top_k, self.num_samples = g["seed"], app["top_k"], app["num_samples"]
        self.lock = threading.Lock()
        record = self.predictor.meta.get("source_weights") or {}
        self.cam, self.cam_off = None, None
        if g["pretrained_model"] or (record.get("path") and os.path.isfile(record["path"])):
            self.cam = GradCAM(model_for_export(cfg, self.predictor, "App.model"))  # other weights: refused
        else:
            self.cam_off = (f"Grad-CAM is off: it needs the weights {self.predictor.prefix} was exported from "
                            f"({record.get('path') or 'not recorded'}); give them with "
                            "-o Global.pretrained_model=path/to/model.pdparams")
            self.log.warning(self.cam_off)

    @property
    def summary(self):
        p = self.predictor
        return (f"{p.meta.get('model', 'model')} ({len(self.names)} classes: {', '.join(self.names[:10])}"
                f"{', ...' if len(self.names) > 10 else ''}), {p.input_shape[1]}x{p.input_shape[2]} input, "
                f"through {p.backend_label}")

    def name(self, c):
        return self.names[c] if c < len(self.names) else str(c)

    def classify(self, rgb):
        """An RGB uint8 image of any size -> (the image as the model sees it, RGB uint8; probabilities)."""
        from ..explain import restore_image

        rgb = np.asarray(rgb)
        if rgb.ndim == 2:
            rgb = np.repeat(rgb[..., None], 3, axis=-1)
        rgb = np.ascontiguousarray(rgb[..., :3]).astype(np.uint8)
        x = self.predictor.preprocess(rgb, color="RGB")
        with self.lock:
            probs = self.predictor.predict_proba(x[None], self.predictor.temperature)[0]  # calibrated when exported so
        return restore_image(x, self.mean, self.std), probs

    def faithfulness(self, image, saliency, c):
        from ..explain import faithfulness

        with self.lock:
            return faithfulness(self.predict_fn, image, saliency, c, seed=self.seed)

    def lime(self, image, c):
        from ..explain import LimeImageExplainer, explanation_image, lime_saliency

        explainer = LimeImageExplainer(self.predict_fn, random_seed=self.seed, progress=False)
        with self.lock:
            weights = explainer.interpret(image, interpret_class=c, num_samples=self.num_samples, visual=False)
        segments = explainer.lime_results["segmentation"]
        overlay = explanation_image(_enlarge(image), _enlarge(segments), weights[c])
        return overlay, self.faithfulness(image, lime_saliency(segments, weights[c]), c)

    def gradcam(self, image, c):
        from ..explain import gradcam_overlay

        with self.lock:
            cam = self.cam(self.predict_fn.prepare(image[None]), class_ids=c)[0]
        return _enlarge(gradcam_overlay(image, cam)), self.faithfulness(image, cam, c)


def build_app(cfg, examples=None, model=None):
    """The Gradio ``Blocks`` of the app (not launched) and its :class:`AppModel` (``model``, else made here).
    ``examples``: image files offered to pick; None = App.images (none when unset)."""
    from ..explain.plots import faithfulness_text

    gr = _import_gradio()
    model = model or AppModel(cfg)
    if examples is None:
        examples = image_files(cfg["App"]["images"], "App.images") if cfg["App"]["images"] else []

    def predict(rgb):
        if rgb is None:
            return None, "", None
        image, probs = model.classify(rgb)
        order = np.argsort(-probs, kind="stable")
        top = {model.name(int(c)): float(probs[c]) for c in order[:model.top_k]}
        c = int(order[0])
        return top, f"predicted: {model.name(c)} ({probs[c]:.2f})", (image, c)

    def explain(seen):
        if seen is None:
            return None, "", None, ""
        image, c = seen
        lime, lime_faith = model.lime(image, c)
        lime_caption = f"LIME, {model.name(c)}: {faithfulness_text(lime_faith)}"
        if model.cam is None:
            return lime, lime_caption, None, model.cam_off
        cam, cam_faith = model.gradcam(image, c)
        cam_caption = f"Grad-CAM ({model.cam.layer_name}), {model.name(c)}: {faithfulness_text(cam_faith)}"
        return lime, lime_caption, cam, cam_caption

    with gr.Blocks(title="ppvit", analytics_enabled=False) as demo:
        gr.Markdown(f"## ppvit\n{model.summary}", elem_id="summary")
        with gr.Row():
            with gr.Column():
                upload = gr.Image(type="numpy", image_mode="RGB", sources=["upload", "clipboard"], label="image",
                                  elem_id="image")
                if examples:
                    gr.Examples(examples=[[p] for p in examples], inputs=upload, label="examples")
            with gr.Column():
                predicted = gr.Markdown(elem_id="predicted")
                label = gr.Label(num_top_classes=model.top_k, label=f"top-{model.top_k}", elem_id="topk")
        seen = gr.State()
        gr.Markdown("Explanations of the predicted class, with their faithfulness: deletion AUC (lower is better) "
                    "and insertion AUC (higher is better) against a random pixel ranking.")
        with gr.Row():
            with gr.Column():
                lime_image = gr.Image(label="LIME (green: superpixels that raise the class)", elem_id="lime",
                                      interactive=False)
                lime_text = gr.Markdown(elem_id="lime-faithfulness")
            with gr.Column():
                cam_image = gr.Image(label="Grad-CAM (red: strongest evidence)", elem_id="gradcam",
                                     interactive=False)
                cam_text = gr.Markdown(elem_id="gradcam-faithfulness")
        upload.change(predict, inputs=upload, outputs=[label, predicted, seen]).then(
            explain, inputs=seen, outputs=[lime_image, lime_text, cam_image, cam_text])
    return demo, model


def launch_options(gr=None):
    """``demo.launch(**launch_options())`` keyword arguments of an offline app: the system's fonts (no font CDN),
    no server-side rendering (no Node), no MCP server, no footer links, errors shown; host and port left to the
    caller (``ppvit app``: App.host/App.port; an AI Studio app: the platform's)."""
    gr = gr or _import_gradio()
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])
    return dict(share=False, inbrowser=False, ssr_mode=False, mcp_server=False, footer_links=[], theme=theme,
                show_error=True)


def check_port(host, port):
    """Refuse (``ConfigError``) an App.host/App.port this machine cannot listen on, before anything is loaded."""
    import socket

    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.bind((host, port))
    except OSError as e:  # the port is taken, or the host is not an interface of this machine
        raise ConfigError(f"App.host/App.port: cannot listen on {host}:{port} ({e.strerror or e}); choose another "
                          "port with -o App.port=PORT") from None


def run(cfg):
    """``ppvit app``: serve the app on http://App.host:App.port until interrupted (Ctrl-C)."""
    app = cfg["App"]
    check_port(app["host"], app["port"])
    _check_gradio()  # not installed: said before any model is loaded
    log = get_logger()
    model = AppModel(cfg)  # a missing or mismatched export stops here, before the server starts
    gr = _import_gradio()
    with tempfile.TemporaryDirectory(prefix="ppvit-app-") as folder:
        examples = example_images(cfg, folder)
        demo, model = build_app(cfg, examples, model)
        log.info(f"serving {model.summary} on http://{app['host']}:{app['port']} (Ctrl-C stops it)")
        demo.launch(server_name=app["host"], server_port=app["port"], quiet=True, **launch_options(gr),
                    allowed_paths=[folder] + [os.path.dirname(os.path.abspath(p)) for p in examples])
