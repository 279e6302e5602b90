"""Files alertd writes for a person (exports, sample digests): 0600, new, never through a link."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from pathlib import Path


def write_private(target: Path, chunks: Iterable[bytes]) -> None:
    """Write ``chunks`` to a new file beside ``target``, then rename it over ``target``.

    The new file has a random name and is created with O_EXCL and O_NOFOLLOW, mode 0600
    (a umask only takes from it): a symbolic link or a file someone else placed at a
    predictable name (``.backup.partial``) is never opened, so never written through or left
    readable. A link at ``target`` itself is replaced, not followed. A failure leaves
    ``target`` as it was and removes the new file.

    Raises:
        OSError: the folder cannot be written.
    """
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(6)}.partial")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    descriptor = os.open(temporary, flags, 0o600)
    try:
        with open(descriptor, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
