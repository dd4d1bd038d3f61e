"""Directories, files and sockets that only their owner may use.

The embedded Redis server keeps every queued record in its AOF, so its data directory is the
user's alone: directories 0700, files 0600, owned by the user running lancequeue. A path that
another user owns, or that lets others in, is refused with an error naming it rather than used.
"""

from __future__ import annotations

import logging
import os
import pwd
import stat
from pathlib import Path

from lancequeue.common.errors import ConfigError

logger = logging.getLogger(__name__)

_OTHERS = 0o077  # the permission bits of group and others


def owner_label(uid: int) -> str:
    """``uid 1001 (alice)``, or ``uid 1001`` when the uid has no name."""
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def check_owner(path: Path, st: os.stat_result, what: str) -> None:
    """Raise :class:`ConfigError` unless ``st`` (the stat of ``path``) belongs to this user."""
    if st.st_uid != os.getuid():
        raise ConfigError(
            f"refusing {what} {path}: it belongs to {owner_label(st.st_uid)}, not to this user "
            f"({owner_label(os.getuid())}); another user may have planted it"
        )


def private_dir(path: Path) -> None:
    """Create the directory ``path`` (and its parents) with mode 0700, or narrow an existing one
    of this user's to 0700; refuse a directory that belongs to another user."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.stat(path)
    except OSError as exc:
        raise ConfigError(f"cannot use {path} as a private directory: {exc}") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"refusing the directory {path}: it is not a directory")
    check_owner(path, st, "the directory")
    if stat.S_IMODE(st.st_mode) & _OTHERS:
        logger.info("narrowing the permissions of %s to 0700", path)
        os.chmod(path, 0o700)


def check_socket_dir(path: Path) -> bool:
    """Whether the socket directory ``path`` exists (False if not); raise :class:`ConfigError`
    unless it is a real directory (not a symlink) of this user's that no one else may enter."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"refusing the socket directory {path}: it is not a real directory")
    check_owner(path, st, "the socket directory")
    if stat.S_IMODE(st.st_mode) & _OTHERS:
        raise ConfigError(
            f"refusing the socket directory {path}: its mode {stat.S_IMODE(st.st_mode):04o} "
            "lets other users in (it must be 0700)"
        )
    return True


def socket_dir(path: Path) -> None:
    """Create the socket directory ``path`` with mode 0700 inside a shared directory such as
    ``/tmp``, unless it exists; then check it as :func:`check_socket_dir` does."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigError(f"cannot create the socket directory {path}: {exc}") from exc
    check_socket_dir(path)


def check_socket(path: Path) -> bool:
    """Whether a unix socket of this user's is at ``path`` (False if nothing is there); raise
    :class:`ConfigError` if something else is: a symlink, another kind of file, or a socket
    that belongs to another user. Call it before connecting to ``path``."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(st.st_mode):
        raise ConfigError(f"refusing the socket {path}: it is a symlink")
    if not stat.S_ISSOCK(st.st_mode):
        raise ConfigError(f"refusing the socket {path}: it is not a unix socket")
    check_owner(path, st, "the socket")
    return True


def tighten_tree(root: Path) -> None:
    """Take group and other permissions away from ``root`` and everything under it (files
    become 0600, directories 0700 at most); refuse an entry that belongs to another user.
    Symlinks are neither followed nor changed."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            _tighten(Path(dirpath, name))
    _tighten(root)


def open_private(path: Path, flags: int) -> int:
    """``os.open`` of the file ``path``, created 0600 if missing, narrowed to 0600 if it
    exists; refuses a symlink and a file of another user's. Returns the descriptor."""
    fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        st = os.fstat(fd)
        check_owner(path, st, "the file")
        if stat.S_IMODE(st.st_mode) & _OTHERS:
            os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_private_text(path: Path, text: str) -> None:
    """Replace the content of ``path`` with ``text``, as a 0600 file of this user's."""
    with os.fdopen(open_private(path, os.O_WRONLY | os.O_TRUNC), "w") as file:
        file.write(text)


def _tighten(path: Path) -> None:
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return
    check_owner(path, st, "the file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & _OTHERS:
        logger.info("narrowing the permissions of %s to %04o", path, mode & ~_OTHERS)
        os.chmod(path, mode & ~_OTHERS)
