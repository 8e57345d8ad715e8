"""Imported first by the ``ppvit`` command (and so by ``tools/*.py``), before anything imports Paddle:
``OMP_NUM_THREADS`` set to the usable cores and Paddle imported without its import-time notices
(``ppvit.utils.quiet_paddle_import``, which notebooks and benchmarks call too).

Library code never does this: ``import ppvit`` leaves the environment and stderr alone.
"""
from ..utils.quiet import quiet_paddle_import

quiet_paddle_import()
