"""The one exception type of ``ppvit.data``: a problem the user can fix (a missing or corrupt archive,
an unknown dataset or transform name, a bad option value). Tools print its message without a traceback."""
from ..errors import PpvitError


class DataError(PpvitError):
    """A data setting or file that cannot be used; the message says what to do about it."""
