"""A write that fails for lack of room: a full disk (ENOSPC), a file-size
limit (EFBIG, ``ulimit -f``) or a quota (EDQUOT), reported against the
user's path.

Libraries report these in their own ways: a bare ``OSError`` without a file
name (``open().write``, matplotlib, onnx, zipfile), ``torch.save``'s
``RuntimeError`` with the ``OSError`` as its context (when it writes through
a Python file object), h5py's ``OSError`` with a page of HDF5 text naming the
hidden temporary file. :func:`disk_error` finds the ``OSError`` in an
exception's chain and :func:`naming` turns it into
``OSError(errno, "No space left on device", PATH)``, which the CLI prints as
``Error: PATH: No space left on device``. The atomic writers
(fer2neuro/atomic.py) apply it to whatever their body raises, so every result
written through them names the file the user asked for.
"""
from __future__ import annotations

import errno
import os

DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


def disk_error(exc: BaseException | None) -> OSError | None:
    """The full-disk/file-size/quota ``OSError`` in ``exc``'s chain (itself,
    its cause or context, ...), or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def naming(exc: BaseException, path) -> OSError | None:
    """A one-line ``OSError`` naming ``path`` for the disk error in ``exc``'s
    chain (the system's short text, not the library's), or None if there is
    none."""
    found = disk_error(exc)
    if found is None:
        return None
    return OSError(found.errno, os.strerror(found.errno), os.fspath(path))


def raise_naming(exc: BaseException, path) -> None:
    """In an ``except`` clause: raise :func:`naming`'s error if ``exc`` holds
    a disk error, else return (the caller re-raises ``exc``)."""
    found = naming(exc, path)
    if found is not None:
        raise found from None
