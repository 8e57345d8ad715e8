"""Small helpers that are not part of the model/engine API (see ``ppvit.utils.notebook``).

``quiet_paddle_import`` is importable without importing Paddle (the reason it exists)."""
from .quiet import drop_stderr_lines, quiet_paddle_import  # noqa: F401
