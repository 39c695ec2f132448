"""Opening an HDF5 file a user hands us (a netx ``.net`` network, a NIR
``.nir`` graph) so that every number read comes from that file.

HDF5 can take a dataset's values from elsewhere, and h5py follows each of
these silently when the value is read:

* an external link (``h5py.ExternalLink``): a name in this file for an
  object in any other HDF5 file on the machine;
* a dataset with external storage (``create_dataset(..., external=...)``):
  its raw values are read from any other file, HDF5 or not;
* a virtual dataset: its values are mapped from datasets in other files.

And a soft link (a path, resolved when used) can point at itself or at a
loop of soft links: h5py then raises RuntimeError ("too many links") from
deep inside a reader. fer2neuro writes none of these, nor does lava-dl or
NIR, so ``check_self_contained`` walks the whole file first, link by link
without resolving any (``get(name, getlink=True)``), and refuses the file
on the first one, naming the file and the object. Every HDF5 reader goes
through it: ``open_hdf5`` (the netx readers) or a check before ``nir.read``.
"""
from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import h5py

from fer2neuro.errors import GraphError, one_line

# A netx network or a NIR graph has tens to hundreds of objects; a file with
# more is not one of them, and walking millions would only take time.
MAX_OBJECTS = 100_000


def _one_line(exc: BaseException) -> str:
    return one_line(exc, 160) or type(exc).__name__


def check_self_contained(f: h5py.File, name: str, error: type[Exception] = GraphError) -> None:
    """Raise ``error`` (one line naming ``name`` and the object) if the open
    file ``f`` holds an external or soft link, a user-defined link, a
    dataset with external storage or a virtual dataset, or more than
    MAX_OBJECTS objects. Hard links that close a cycle are walked once."""
    try:
        _walk(f, name, error)
    except (OSError, RuntimeError, KeyError, ValueError) as exc:    # h5py's errors for a damaged file
        if isinstance(exc, error):
            raise
        raise error(f"{name}: a damaged HDF5 file ({_one_line(exc)})") from None


def _walk(f: h5py.File, name: str, error: type[Exception]) -> None:
    seen = {f.id}
    stack = [(f, "")]
    count = 0
    while stack:
        group, path = stack.pop()
        for key in group:                          # link names: listing resolves nothing
            where = f"{path}/{key}"
            count += 1
            if count > MAX_OBJECTS:
                raise error(f"{name}: more than {MAX_OBJECTS} HDF5 objects; not a file fer2neuro reads")
            link = group.get(key, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                raise error(f"{name}: {where} is an external link to {link.filename}:{link.path}; fer2neuro "
                            f"reads no values from outside the file")
            if isinstance(link, h5py.SoftLink):
                raise error(f"{name}: {where} is a soft link to {link.path}; fer2neuro reads files without "
                            f"soft links (a soft link can loop or point anywhere in the file)")
            if not isinstance(link, h5py.HardLink):
                raise error(f"{name}: {where} is a user-defined HDF5 link; fer2neuro reads hard links only")
            item = group[key]
            if isinstance(item, h5py.Dataset):
                if item.is_virtual:
                    raise error(f"{name}: {where} is a virtual dataset (its values come from other files); "
                                f"fer2neuro reads values stored in the file itself")
                plist = item.id.get_create_plist()
                if plist.get_external_count():
                    other = plist.get_external(0)[0].decode(errors="replace")
                    raise error(f"{name}: {where} has external storage (its values are read from {other}); "
                                f"fer2neuro reads values stored in the file itself")
            elif isinstance(item, h5py.Group) and item.id not in seen:
                seen.add(item.id)
                stack.append((item, where))


def open_hdf5(file, name: str, error: type[Exception] = GraphError,
              what: str = "a readable HDF5 file") -> h5py.File:
    """``h5py.File(file, "r")`` (a path or a binary file object), checked
    with ``check_self_contained``; the caller closes it. A file HDF5 cannot
    open is one line: "``name``: not ``what`` (h5py's reason)"."""
    try:
        f = h5py.File(file, "r")
    except (OSError, ValueError) as exc:
        raise error(f"{name}: not {what} ({_one_line(exc)})") from None
    try:
        check_self_contained(f, name, error)
    except BaseException:
        f.close()
        raise
    return f


def check_hdf5_file(path, error: type[Exception] = GraphError, what: str = "a readable HDF5 file") -> None:
    """Check the file at ``path`` before a library that opens it itself
    (``nir.read``) reads it: ``open_hdf5``, then closed."""
    open_hdf5(str(path), str(path), error, what).close()


def write_hdf5(path: str | Path, write: Callable[[io.BytesIO], None]) -> None:
    """Let ``write`` fill an HDF5 file in memory (h5py writes to a file
    object), then write its bytes to ``path`` with one plain write.

    h5py writing to disk cannot fail cleanly: on a full disk or past a
    file-size limit HDF5 reports the failed write from every object it frees
    (dozens of tracebacks), and the file, which it could not close, crashes
    the interpreter at exit (a segmentation fault). In memory h5py never sees
    the disk, and a disk error is one ``OSError`` from the write."""
    buffer = io.BytesIO()
    write(buffer)
    with open(path, "wb") as f:
        f.write(buffer.getbuffer())
