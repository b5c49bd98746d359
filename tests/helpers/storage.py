"""A folder on its own tiny tmpfs, made read-only or full on demand, for black-box store tests.

chmod does not stop root (the tests run as root in CI's container), and a hook inside the
daemon would not be black-box. A tmpfs of its own gives the kernel's real answers instead:
`mount -o remount,ro` makes every write fail with EROFS, a filler file makes the next one fail
with ENOSPC. Needs the right to mount (root with CAP_SYS_ADMIN); the tests skip without it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

SIZE_KIB = 64


def _run(*argv: str, check: bool = True) -> None:
    """mount/umount with fixed arguments and our own paths (no input from outside)."""
    subprocess.run(argv, check=check, capture_output=True, timeout=30)  # noqa: S603


def _mount(*args: str) -> None:
    _run("mount", *args)


class Storage:
    """A mounted tmpfs at `path`; `read_only`, `full` and `writable` switch its state."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._filler = path / "filler.bin"
        self.bound = False

    def read_only(self) -> None:
        """Every write, rename and create now fails with EROFS (also for root).

        A read-only bind mount on top: remounting the tmpfs itself read-only is refused while
        the daemon keeps a file open for writing (its lock), as the kernel would not refuse
        a disk that fails.
        """
        _mount("--bind", str(self.path), str(self.path))
        self.bound = True
        _mount("-o", "remount,ro,bind", str(self.path))

    def writable(self) -> None:
        """Back to normal: read-write and with free space."""
        if self.bound:
            # Lazy: a lock file the daemon opened through the read-only view stays open.
            _run("umount", "-l", str(self.path))
            self.bound = False
        with contextlib.suppress(FileNotFoundError):
            self._filler.unlink()

    def full(self) -> None:
        """Fill it: the next data block written anywhere on it fails with ENOSPC.

        Filled until a probe write fails too: a save of the daemon's that landed meanwhile
        may have freed the page of the file it replaced.
        """
        chunk = b"\0" * 4096
        probe = self.path / ".probe"
        for _ in range(10):
            with self._filler.open("ab", buffering=0) as fh:  # unbuffered: close has nothing left
                while True:
                    try:
                        fh.write(chunk)
                    except OSError as err:
                        if err.errno != errno.ENOSPC:
                            raise
                        break
            try:
                probe.write_bytes(chunk)
            except OSError as err:
                if err.errno != errno.ENOSPC:
                    raise
                return
            finally:
                with contextlib.suppress(OSError):
                    probe.unlink()
        raise AssertionError(f"{self.path} never filled up")


@contextlib.contextmanager
def tiny_tmpfs(path: Path) -> Iterator[Storage]:
    """Mount a 64 KiB tmpfs at `path` for the test; skip if this machine does not allow it."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs (chmod alone cannot stop root)")
    try:
        _mount("-t", "tmpfs", "-o", f"size={SIZE_KIB}k,mode=0700", "tmpfs", str(path))
    except (subprocess.CalledProcessError, FileNotFoundError) as err:
        pytest.skip(f"cannot mount a tmpfs here: {err}")
    storage = Storage(path)
    try:
        yield storage
    finally:
        for _ in range(2 if storage.bound else 1):  # the bind, then the tmpfs
            _run("umount", "-l", str(path), check=False)
