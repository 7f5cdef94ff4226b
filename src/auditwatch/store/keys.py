"""The store's MAC key file: 32 random bytes, readable by the collector only."""

from __future__ import annotations

import os
import stat

KEY_SIZE = 32


class StoreError(Exception):
    """A store or key file that cannot be used; the message names the file and the fix."""


class KeyFileError(StoreError):
    pass


class StoreTampered(StoreError):
    """The store no longer ends at its sealed head: the writer will not chain onto it."""


def default_key_path(store_path: str) -> str:
    return store_path + ".key"


def user_key_dir() -> str:
    """Where ``auditwatch run`` keeps its runs' keys: out of the run directory, so a
    copy of the run directory carries no key (``$XDG_DATA_HOME/auditwatch/keys``)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return os.path.join(base, "auditwatch", "keys")


def stored_key_path(key_dir: str, store_id_hex: str) -> str:
    """The key of one store in a key directory (created private when missing)."""
    os.makedirs(key_dir, mode=0o700, exist_ok=True)
    return os.path.join(key_dir, f"{store_id_hex}.key")


def key_for_store(store_path: str, store_id_hex: str | None) -> str:
    """The key a reader should try when none is named: ``<store>.key`` next to the
    store when it exists, else the store's key in :func:`user_key_dir`."""
    beside = default_key_path(store_path)
    if os.path.exists(beside) or not store_id_hex:
        return beside
    candidate = os.path.join(user_key_dir(), f"{store_id_hex}.key")
    return candidate if os.path.exists(candidate) else beside


def create_key(path: str) -> bytes:
    """Write a new key with mode 0600; never overwrites an existing file."""
    key = os.urandom(KEY_SIZE)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"key file {path} already exists; refusing to overwrite it") from None
    except OSError as exc:
        raise KeyFileError(f"cannot create key file {path}: {exc.strerror}") from None
    try:
        os.fchmod(fd, 0o600)  # whatever the umask allowed, the key is private
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    return key


def load_key(path: str) -> bytes:
    """Read a key file, refusing one that group or others can access."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise KeyFileError(
            f"key file {path} does not exist; pass the key the store was sealed with (--key PATH)"
        ) from None
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"key file {path} is not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise KeyFileError(
                f"key file {path} is accessible by group or others (mode {mode:04o}); "
                f"anyone who can read it can forge records. Fix: chmod 600 {path}"
            )
        key = os.read(fd, KEY_SIZE + 1)
    finally:
        os.close(fd)
    if len(key) != KEY_SIZE:
        raise KeyFileError(
            f"key file {path} holds {len(key)} bytes, expected {KEY_SIZE}: not an auditwatch key"
        )
    return key
