"""``ppvit app`` driven in a real headless Chromium (selenium + Debian's chromium/chromium-driver): a model
trained for a few seconds on the offline photo demo (crops of scikit-image's photos), exported, served by
tools/app.py as a user starts it; a photo whose file name says nothing of its class is uploaded and the
predicted class read on the page, which must be the exported model's own answer, with the class's name.

Skipped only when Chromium is absent (CI installs it: .ci/run). ``PPVIT_APP_SCREENSHOT=path`` also saves the
page (docs/images/app.png is made this way)."""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np
import pytest

from tests.runs import ROOT, write_config

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
needs_chromium = pytest.mark.skipif(
    not (os.path.isfile(CHROMIUM) and os.path.isfile(CHROMEDRIVER)),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; CI has them)")

CLASSES = ["astronaut", "cat", "coffee", "rocket"]


def _config(root):
    return {
        "Global": {"device": "cpu", "seed": 0, "epochs": 4, "output_dir": str(root / "output"), "run_name": "photos"},
        "Arch": {"name": "convmixer_256_8", "num_classes": 4, "dim": 16, "depth": 2, "img_size": 32},
        "Optimizer": {"name": "AdamW", "lr": 0.01, "weight_decay": 0.005},
        "Data": {"dataset": "folder", "train_dir": str(root / "photos" / "train"),
                 "val_dir": str(root / "photos" / "val"), "transform": "basic", "batch_size": 16,
                 "eval_batch_size": 32, "num_workers": 0},
        "Export": {"onnx": False, "check_images": 16},
        "App": {"examples": 4},
    }


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _photo(path):
    """A centre crop of Chelsea the cat, not one of the demo's training crops, saved under a neutral name."""
    import cv2
    import skimage.data

    cat = skimage.data.chelsea()
    h, w = cat.shape[:2]
    crop = cat[h // 2 - 130:h // 2 + 110, w // 2 - 150:w // 2 + 90]
    cv2.imwrite(str(path), np.ascontiguousarray(crop[:, :, ::-1]))
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(url, config path, run folder): a trained and exported photo model served by tools/app.py."""
    from ppvit.commands.export import run as export
    from ppvit.data.demo import write_photo_demo
    from ppvit.engine import Engine, load_config

    root = tmp_path_factory.mktemp("app")
    write_photo_demo(root / "photos", train_per_class=24, val_per_class=8, size=48)
    config = write_config(root, _config(root), name="photos.yaml")
    cfg = load_config(config)
    Engine(cfg).train()
    export(load_config(config))
    port = _free_port()
    log = open(root / "app.log", "w")
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "tools", "app.py"), "-c", config,
                             "-o", f"App.port={port}"], stdout=log, stderr=subprocess.STDOUT, cwd=root,
                            env=dict(os.environ, OMP_NUM_THREADS="1", PPVIT_OFFLINE="1"))
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None, (root / "app.log").read_text()
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.time() < deadline, (root / "app.log").read_text()
            time.sleep(1)
        yield url, config, root
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="ppvit-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                "--window-size=1280,1100"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@needs_chromium
def test_app_classifies_an_uploaded_photo_in_a_browser(served, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from ppvit.deploy import Predictor, read_image

    url, _, root = served
    photo = _photo(tmp_path / "image_0001.png")
    # what the served model answers for that file (the infer path)
    predictor = Predictor(str(root / "output" / "photos" / "inference"), device="cpu")
    probs = predictor.predict_proba(predictor.preprocess(read_image(str(photo)))[None])[0]
    expected = CLASSES[int(np.argmax(probs))]
    assert predictor.labels == CLASSES

    browser.get(url)
    WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#image input[type=file]"))
    summary = browser.find_element(By.ID, "summary").text
    assert "convmixer_256_8" in summary and "astronaut, cat, coffee, rocket" in summary, summary
    browser.find_element(By.CSS_SELECTOR, "#image input[type=file]").send_keys(str(photo))
    WebDriverWait(browser, 60).until(lambda d: "predicted:" in d.find_element(By.ID, "predicted").text)
    shown = browser.find_element(By.ID, "predicted").text
    assert shown.startswith(f"predicted: {expected} ("), (shown, probs)
    assert float(shown.split("(")[1].rstrip(")")) == pytest.approx(float(probs.max()), abs=0.006)
    assert expected == "cat", probs  # the model learned the photos: the class and its name come through
    # the explanations of that class, each with its faithfulness
    WebDriverWait(browser, 60).until(lambda d: "AUC" in d.find_element(By.ID, "gradcam-faithfulness").text)
    for panel in ("lime-faithfulness", "gradcam-faithfulness"):
        text = browser.find_element(By.ID, panel).text
        assert f", {expected}: deletion AUC" in text and "insertion AUC" in text, text
    assert browser.find_elements(By.CSS_SELECTOR, "#lime img") and browser.find_elements(By.CSS_SELECTOR,
                                                                                         "#gradcam img")
    # offline: every resource the page loaded came from the app itself
    loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded and all(u.startswith(url.rstrip("/")) or u.startswith("data:") or u.startswith("blob:")
                          for u in loaded), [u for u in loaded if not u.startswith(url)]
    if os.environ.get("PPVIT_APP_SCREENSHOT"):
        browser.save_screenshot(os.environ["PPVIT_APP_SCREENSHOT"])


def _app_errors(config, overrides, capsys):
    """``ppvit app`` in-process (no second interpreter): its exit code and stderr lines."""
    from ppvit.commands.cli import main

    code = main(["app", "-c", config] + [a for o in overrides for a in ("-o", o)])
    return code, capsys.readouterr().err.strip().splitlines()


def test_app_refuses_a_taken_port_a_missing_export_and_a_missing_gradio(tmp_path, capsys, monkeypatch):
    """One error line each, exit 2, before anything is loaded or served."""
    import importlib.util

    from tests.runs import TINY

    config = write_config(tmp_path, dict(TINY, Global=dict(TINY["Global"], output_dir=str(tmp_path / "out"))))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, err = _app_errors(config, [f"App.port={port}", f"App.model={tmp_path / 'none'}"], capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith("error: App.host/App.port"), err
    assert f"127.0.0.1:{port}" in err[0] and "-o App.port=PORT" in err[0]
    code, err = _app_errors(config, [f"App.port={_free_port()}", f"App.model={tmp_path / 'none'}"], capsys)
    assert code == 2 and len(err) == 1 and "App.model" in err[0] and "tools/export.py" in err[0], err
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else real(name, *a))
    code, err = _app_errors(config, [f"App.port={_free_port()}"], capsys)
    assert code == 2 and len(err) == 1 and "pip install '.[app]'" in err[0], err
