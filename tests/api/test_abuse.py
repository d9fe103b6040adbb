"""Abuse: oversized bodies and uploads are refused (413 in the envelope) without the server holding them:
its peak memory grows by far less than what was sent."""

from __future__ import annotations

import json
import select
import socket
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import make_token

MB = 2**20


def _peak_rss(pid: int) -> int:
    """Peak resident memory of a process (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _stream(
    port: int, path: str, headers: dict[str, str], chunks, chunked: bool = True
) -> tuple[int, dict, int]:
    """Send a request whose body comes from ``chunks`` over a raw socket, reading the answer as soon as
    the server sends one. Returns (status, JSON body, bytes of body sent)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    if chunked:
        head += "Transfer-Encoding: chunked\r\n"
    sock.sendall((head + "\r\n").encode())
    sent, answer = 0, b""
    try:
        for chunk in chunks:
            if select.select([sock], [], [], 0)[0]:
                break
            data = (f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n") if chunked else chunk
            sock.sendall(data)
            sent += len(chunk)
        else:
            if chunked:
                sock.sendall(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    try:
        while True:
            part = sock.recv(65536)
            if not part:
                break
            answer += part
    except (TimeoutError, ConnectionResetError):
        pass
    sock.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    if b"chunked" in head.lower():
        decoded, rest = b"", body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            decoded, rest = decoded + rest[:size], rest[size + 2 :]
        body = decoded
    return status, json.loads(body), sent


def _junk(total: int, piece: bytes = b"x"):
    chunk = piece * MB
    for _ in range(total // MB):
        yield chunk


@pytest.fixture
def limited(sqlite_url, server_factory):
    server = server_factory(
        sqlite_url, env={"AUTOPEFT_MAX_UPLOAD_BYTES": str(MB), "AUTOPEFT_MAX_BODY_BYTES": str(MB)}
    )
    return server, make_token(sqlite_url, "flooder")


def test_declared_oversized_bodies_are_refused_before_reading(limited):
    server, token = limited
    auth = {"Authorization": f"Bearer {token}"}
    for path, ctype in (
        ("/api/v1/studies", "application/json"),
        ("/api/v1/datasets", "multipart/form-data; boundary=x"),
    ):
        status, body, sent = _stream(
            server.port,
            path,
            {**auth, "Content-Type": ctype, "Content-Length": str(10**12)},
            iter(()),
            chunked=False,
        )
        assert status == 413 and body["error"]["code"] == "too_large", body
    r = httpx.post(
        f"{server.url}/api/v1/studies",
        content=b"{" + b" " * (2 * MB) + b"}",
        trust_env=False,
        headers={**auth, "Content-Type": "application/json"},
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"


def test_streamed_floods_are_cut_off_without_holding_them(limited):
    server, token = limited
    auth = {"Authorization": f"Bearer {token}"}
    before = _peak_rss(server.proc.pid)
    flood = 400 * MB
    status, body, sent = _stream(
        server.port,
        "/api/v1/studies",
        {**auth, "Content-Type": "application/json"},
        _junk(flood, b" "),
    )
    assert status == 413 and body["error"]["code"] == "too_large", body
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="huge.csv"\r\n'
        f"Content-Type: text/csv\r\n\r\ntext,label\r\n"
    ).encode()

    def upload():
        yield head
        yield from _junk(flood, b"y")

    status, body, sent = _stream(
        server.port,
        "/api/v1/datasets",
        {**auth, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        upload(),
    )
    assert (
        status == 413 and body["error"]["code"] == "too_large" and body["error"]["field"] == "file"
    ), body
    grown = _peak_rss(server.proc.pid) - before
    assert grown < 64 * MB, f"peak memory grew by {grown / MB:.0f} MiB"
    # nothing half-written is left, and the server still serves
    datasets = server.workdir / "artifacts" / "datasets"
    assert not [p for p in datasets.rglob("*") if p.is_file()]
    assert httpx.get(f"{server.url}/api/v1/datasets", headers=auth, trust_env=False).json() == {
        "datasets": []
    }
