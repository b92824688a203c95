"""The port check that the dashboard and the storage proxy make before they open anything."""
import socket

import pytest

from study.errors import ConfigError
from study.ports import HOST, check_port


def test_a_port_that_a_stopped_server_left_in_time_wait_is_free():
    """A server that closed its connections first leaves them in TIME_WAIT for a minute; the servers bind over
    that (SO_REUSEADDR), and the check refused their restart until it passed."""
    with socket.create_server((HOST, 0)) as server:
        port = server.getsockname()[1]
        with socket.create_connection((HOST, port)) as client:
            conn, _ = server.accept()
            conn.close()  # the server's side closes first: its end of the connection waits in TIME_WAIT
            client.recv(1)
    check_port(port)


def test_a_port_something_listens_on_is_refused():
    with socket.create_server((HOST, 0)) as server:
        with pytest.raises(ConfigError, match="Address already in use"):
            check_port(server.getsockname()[1])
