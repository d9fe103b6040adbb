"""``LocalServer``, the controller the demo and the benchmarks start: a port it chose that another
process takes before the server binds it is replaced; a port the caller named is not."""

from __future__ import annotations

import socket

import pytest

from autopeft.local_server import LocalServer


def _take(port: int) -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def test_a_chosen_port_taken_before_start_is_replaced(tmp_path):
    server = LocalServer(tmp_path)
    first = server.port
    with _take(first), server:
        assert server.port != first and server.url.endswith(f":{server.port}")
        assert server.client().health()
    assert "address already in use" in (tmp_path / "server.log").read_text().lower()


def test_a_named_port_in_use_is_an_error(tmp_path):
    with _take(0) as taken:
        port = taken.getsockname()[1]
        server = LocalServer(tmp_path, port=port)
        with pytest.raises(RuntimeError, match="exited"):
            server.start()
        assert server.port == port
    assert f"cannot listen on 127.0.0.1:{port}" in (tmp_path / "server.log").read_text()
