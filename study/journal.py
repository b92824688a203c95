"""Optuna's journal file, whose appends are whole lines or nothing.

    >>> backend = JournalFile("study.log")
    >>> backend.append_logs([{"op_code": 0}]); [log for log in backend.read_logs(0)]
    [{'op_code': 0}]

Optuna appends a batch of log lines with one buffered write. Cut short (a full disk, a process killed
mid-write), it leaves part of a line, and the next append, by any process, continues that line: it no
longer parses ("Expecting ',' delimiter"), Optuna refuses every line after it, and the study is lost.
Here an append that fails is undone, and opening the file drops a part-line that a killed writer left.
Both hold Optuna's own lock, so a concurrent writer's line is never cut. A file that is no journal is
refused, untouched.
"""
from __future__ import annotations

import json
import os
from typing import Any

from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.storages.journal._file import get_lock_file  # the lock protocol must be Optuna's own

CHUNK = 1 << 16
HEAD = b'{"op_code":'  # how every line of Optuna's journal begins: json.dumps of {"op_code": ..., ...}


class JournalFile(JournalFileBackend):
    def __init__(self, path: str) -> None:
        _refuse_other_files(path)
        super().__init__(path, lock_obj=JournalFileOpenLock(path))  # creates the file if it is not there
        if _whole_lines(path) < os.path.getsize(path):  # rare: a writer was killed mid-write
            try:
                with get_lock_file(self._lock):
                    with open(path, "r+b") as f:  # again under the lock: a writer may have been mid-line
                        f.truncate(_whole_lines(path))
            except PermissionError:  # a file this user may only read: no append can continue the part-line
                pass

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        data = ("\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n").encode()
        with get_lock_file(self._lock):
            fd = os.open(self._file_path, os.O_WRONLY | os.O_APPEND)
            try:
                start = os.fstat(fd).st_size
                try:
                    view = memoryview(data)
                    while view:  # a write may take part of the bytes, then fail on the rest
                        view = view[os.write(fd, view):]
                    os.fsync(fd)
                except BaseException:
                    os.ftruncate(fd, start)  # none of this batch, rather than part of a line
                    raise
            finally:
                os.close(fd)


def _refuse_other_files(path: str) -> None:
    """A file that is there and is no journal is refused before anything opens it for writing: a study.db
    passed without sqlite:///, or any other file, had its "part-line" cut, and a SQLite study was lost."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(HEAD))
    except (FileNotFoundError, IsADirectoryError):  # a new journal, or the error Optuna's opening gives
        return
    if head != HEAD[:len(head)]:  # an empty file, or a first line cut short, is still a journal
        if head.startswith(b"SQLite"):
            raise ValueError(f"{path} is a SQLite database, not a journal file: pass sqlite:///{path}")
        raise ValueError(f"{path} is not an Optuna journal file (it begins {head!r}); it was left as it is")


def _whole_lines(path: str) -> int:
    """The file's length up to the end of its last complete line, read from its end."""
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        while end > 0:
            f.seek(end - min(CHUNK, end))
            chunk = f.read(min(CHUNK, end))
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                return end - len(chunk) + cut + 1
            end -= len(chunk)
    return 0
