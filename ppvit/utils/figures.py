"""The one matplotlib convention of the library: figures are ``matplotlib.figure.Figure`` objects on their own
Agg canvas, never pyplot's, so plotting works headless, is thread-safe, and never switches the global backend
of the program (a notebook's inline backend stays as it is). ``save_png`` writes them atomically."""
import os

__all__ = ["agg_figure", "save_png"]


def agg_figure(figsize, dpi=100, **kwargs):
    """A ``Figure(figsize=(width, height) inches, dpi, **kwargs)`` attached to an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi, **kwargs)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path, **savefig_kwargs):
    """Write ``fig`` as a PNG to ``path`` atomically (creating its folder); returns ``path``."""
    from ..io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", **savefig_kwargs)
    return os.fspath(path)
