"""The error contract: ``PpvitError`` is a mistake the user can fix (a config key, a data file, a weight file);
its message names the culprit and the fix. The tools print it as one ``error:`` line and exit 2. Anything else
raised inside ppvit is a bug and keeps its traceback.

    ConfigError      a config file, a -o override or a combination of keys (ppvit.engine.config)
    DataError        a dataset, archive, image folder or transform setting (ppvit.data)
    CheckpointError  a weight or checkpoint file: missing, unreadable, or not matching the model (ppvit.io)

``PpvitError`` derives from ``ValueError``, so code that caught ``ValueError`` keeps working.
"""


class PpvitError(ValueError):
    """A problem the user can fix; the message says what and how."""
