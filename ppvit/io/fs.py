"""File-system problems the user can fix, as one line: a read-only file system, a folder without write
permission, a full disk or quota, a file where a folder is expected. ``check_writable`` finds them before any
expensive work (without creating anything that stays); ``os_error_message`` words one met while writing.

    check_writable("output/run", "Global.output_dir")  # raises OutputFolderError naming the path and the fix
"""
import errno
import os
import tempfile

from ..errors import PpvitError

__all__ = ["FIXABLE_ERRNOS", "OutputFolderError", "check_writable", "os_error_message"]

# what each problem is, in words; the errnos the tools report in one line (anything else keeps its traceback)
_WHAT = {
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EFBIG: "the file is too large for the file system",
    errno.ENOTDIR: "a file is in the way where a folder is expected",
    errno.EEXIST: "a file is in the way where a folder is expected",
    errno.EISDIR: "a folder is in the way where a file is expected",
    errno.ENAMETOOLONG: "the path is too long",
    errno.ENOENT: "no such file or folder",
}
FIXABLE_ERRNOS = frozenset(_WHAT)


class OutputFolderError(PpvitError):
    """An output folder (or file) that cannot be written; the message names the path, the cause and the fix."""


def _fix(err_no, where):
    if err_no in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return f"free some space there, or write elsewhere{where}"
    if err_no in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
        return f"move that file or folder away, or write elsewhere{where}"
    if err_no == errno.ENOENT:
        return f"check the path{where}"
    return f"choose a folder you can write to{where}"


def os_error_message(err, key=None):
    """One line for an ``OSError`` (met while writing, mostly): the path, what is wrong and the fix (``key``:
    the setting that chooses the folder, e.g. ``Global.output_dir``, or an option such as ``--dst``); None for
    an errno outside ``FIXABLE_ERRNOS``."""
    if not isinstance(err, OSError) or err.errno not in FIXABLE_ERRNOS:
        return None
    path = err.filename if err.filename is not None else "(a file)"
    if err.filename2 is not None:
        path = f"{err.filename} -> {err.filename2}"
    where = f" with {key}" if key and key.startswith("--") else f" with -o {key}=..." if key else ""
    return f"{path}: {_WHAT[err.errno]} ({os.strerror(err.errno)}); {_fix(err.errno, where)}"


def check_writable(folder, key):
    """Raise ``OutputFolderError`` unless files can be made in ``folder``: its nearest existing ancestor must be
    a folder (not a file), and a temporary file must be creatable there (removed at once; the folder itself is
    not made). Catches read-only file systems, permissions (even where root's access(2) would say yes) and
    files in the way; a full disk shows only when written to (``os_error_message``)."""
    folder = os.path.abspath(os.fspath(folder))
    probe = folder
    while not os.path.lexists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        err = OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), probe)
        raise OutputFolderError(f"{key}: {os_error_message(err, key)} (the output folder is {folder})")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".ppvit-write-check-", dir=probe)
    except OSError as e:
        msg = os_error_message(OSError(e.errno, e.strerror, probe), key)  # the folder, not the probe's name
        if msg is None:
            raise
        raise OutputFolderError(f"{key}: {msg}" + (f" (the output folder is {folder})" if probe != folder else ""))
    os.close(fd)
    os.remove(tmp)
    return folder
