"""The config-driven commands above the libraries they call, and the ``ppvit`` command line:

    ppvit train   -c CONFIG [-o ...]   ppvit.engine.Engine(cfg).train()
    ppvit eval    -c CONFIG [-o ...]   evaluate.run: metrics, eval.json, confusion matrix, prediction grid
    ppvit export  -c CONFIG [-o ...]   export.run: Paddle Inference (+ ONNX) model and its metadata
    ppvit infer   -c CONFIG [-o ...]   infer.run: top-k per image file through the exported model
    ppvit explain -c CONFIG [-o ...]   explain.run: LIME figures
    ppvit convert --model M --src F --dst F   convert.convert_checkpoint: PyTorch weights -> ppvit weights

Each module's ``run`` takes a loaded config (``ppvit.engine.load_config``); nothing here is imported by the
engine. In a notebook: ``from ppvit.commands.evaluate import evaluate``.
"""


