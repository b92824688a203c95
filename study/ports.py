"""Where study's servers (the dashboard, the storage proxy) listen: 127.0.0.1 unless told otherwise, on
a port that is checked before anything is opened.

    >>> import socket
    >>> with socket.socket() as taken:
    ...     taken.bind((HOST, 0)); taken.listen()
    ...     check_port(taken.getsockname()[1])
    Traceback (most recent call last):
    ...
    study.errors.ConfigError: --port: port: cannot listen on 127.0.0.1:...: Address already in use (got ...)
"""
from __future__ import annotations

import socket

from study.errors import ConfigError

HOST = "127.0.0.1"  # never listen on other interfaces unless asked: the storage may hold anything


def check_port(port: int, host: str = HOST) -> None:
    """Refuse a port that is taken now, or a host this machine cannot listen on: one line, not a server's
    traceback later."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As the servers bind: a port a stopped server left in TIME_WAIT is free to them, and was refused here
        # for a minute after each stop. A port something listens on is still refused.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            why = exc.strerror or str(exc)
            raise ConfigError("--port", "port", port, f"cannot listen on {host}:{port}: {why}") from None
