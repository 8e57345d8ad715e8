"""Training: config loading, the train loop and its state, checkpoints, optimizers and schedules, EMA,
distributed helpers and validation during training.

    from ppvit.engine import Engine, load_config
    cfg = load_config("configs/quickstart.yaml", ["Global.epochs=2"])
    Engine(cfg).train()

Evaluation, export, inference and explanations from a config are ``ppvit.commands``.
"""
from . import memory  # noqa: F401  (ppvit.engine.memory)
from .config import ConfigError, load_config, run_dir
from .engine import Engine
from .trainer import NonFiniteLossError
from .plots import plot_confusion_matrix, plot_learning_curve

__all__ = ["ConfigError", "Engine", "NonFiniteLossError", "load_config", "plot_confusion_matrix",
           "plot_learning_curve", "run_dir", "train"]


def train(config_path=None, overrides=(), cfg=None):
    """Load a config (or take ``cfg``), build the engine and train; returns the history dict."""
    return Engine(cfg if cfg is not None else load_config(config_path, overrides)).train()
