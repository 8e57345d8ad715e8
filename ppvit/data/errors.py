"""The exception types of ``ppvit.data``: a problem the user can fix (a missing or corrupt archive, an unknown
dataset or transform name, a bad option value, an image that cannot be read). Tools print the message without
a traceback."""
from ..errors import PpvitError


class DataError(PpvitError):
    """A data setting or file that cannot be used; the message says what to do about it."""


class BadImageError(DataError):
    """One image file that cannot be read while the data is loaded (damaged, deleted, unreadable);
    ``Data.skip_bad_images: true`` skips it. ``path``: the file."""

    def __init__(self, message, path):
        super().__init__(message)
        self.path = path

    def __reduce__(self):  # picklable with its path (worker processes)
        return type(self), (str(self), self.path)
