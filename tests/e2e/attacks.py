"""Attack clients for the adversarial e2e suite and the memory benchmark: raw HTTP/1 bytes,
TCP resets, and an HTTP/2 connection driven stream by stream (python h2). Loopback only; every
loop is bounded."""
from __future__ import annotations

import socket
import struct
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions


def http1_request(method: str, target: str, headers: dict, body: bytes) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body or method not in ("GET", "HEAD"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def raw_send(port: int, data: bytes, timeout: float = 10, half_close: bool = False) -> int:
    """Sends raw bytes, returns the status of the first response (0 if none). `half_close`
    ends the client's side after the bytes, so a truncated request does not wait out a timer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        buf = b""
        try:
            while b"\r\n" not in buf:
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
        except socket.timeout:
            return 0
    parts = buf.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def send_then_reset(port: int, data: bytes, after: float) -> None:
    """Sends a whole request, waits, then closes with a TCP RST (SO_LINGER 0)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(data)
    time.sleep(after)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


class H2:
    """A minimal HTTP/2 client connection (python h2) for stream-level tricks."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.flush()

    def flush(self) -> None:
        self.sock.sendall(self.conn.data_to_send())

    def headers(self, method: str, path: str, headers: dict, end_stream: bool = False) -> int:
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, [(":method", method), (":path", path), (":scheme", "http"),
                                     (":authority", "127.0.0.1"), *[(k.lower(), v) for k, v in headers.items()]],
                               end_stream=end_stream)
        self.flush()
        return sid

    def data(self, sid: int, data: bytes, end_stream: bool = False) -> None:
        # Respect flow control: send what the window allows, pump events while waiting.
        view = memoryview(data)
        deadline = time.monotonic() + 10
        while view and time.monotonic() < deadline:
            window = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if window <= 0:
                self.pump(0.2)
                continue
            n = min(window, len(view))
            self.conn.send_data(sid, bytes(view[:n]))
            view = view[n:]
            self.flush()
        if end_stream:
            self.conn.end_stream(sid)
            self.flush()

    def pump(self, timeout: float) -> list:
        self.sock.settimeout(timeout)
        events = []
        try:
            received = self.sock.recv(65535)
        except (socket.timeout, BlockingIOError):
            return events
        except OSError:
            return [None]
        if not received:
            return [None]
        for event in self.conn.receive_data(received):
            events.append(event)
            if isinstance(event, h2.events.DataReceived):
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        self.flush()
        return events

    def response(self, sid: int, timeout: float = 10) -> tuple[int, bytes]:
        status, data = 0, b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.pump(0.5):
                if event is None:
                    return status, data
                if getattr(event, "stream_id", None) != sid:
                    continue
                if isinstance(event, h2.events.ResponseReceived):
                    status = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.DataReceived):
                    data += event.data
                elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                    return status, data
        return status, data

    def reset(self, sid: int) -> None:
        self.conn.reset_stream(sid, error_code=h2.errors.ErrorCodes.CANCEL)
        self.flush()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def h2_request(port: int, method: str, path: str, headers: dict, body: bytes) -> int:
    c = H2(port)
    try:
        sid = c.headers(method, path, headers, end_stream=not body)
        if body:
            c.data(sid, body, end_stream=True)
        return c.response(sid)[0]
    finally:
        c.close()


def pin_streams(port: int, streams: int, body_bytes: int = 1024 * 1024) -> tuple[H2, int]:
    """Opens `streams` unsigned GitHub deliveries on one HTTP/2 connection, each declaring and
    sending up to `body_bytes` as fast as flow control lets it, and never ends them. Returns the
    connection and how many streams the server refused or reset."""
    c = H2(port)
    refused = 0
    chunk = b"x" * 16384
    sids = []
    try:
        # Take the server's SETTINGS first, as a real client library would.
        c.pump(0.5)
        for _ in range(streams):
            sids.append(c.headers("POST", "/webhooks/github", {"x-hub-signature-256": "sha256=" + "0" * 64,
                                                               "content-length": str(body_bytes)}))
        for _ in range(body_bytes // len(chunk)):
            for sid in sids:
                if c.conn.local_flow_control_window(sid) >= len(chunk):
                    c.conn.send_data(sid, chunk)
            c.flush()
            events = c.pump(0.05)
            if None in events:
                break
            refused += sum(isinstance(e, h2.events.StreamReset) for e in events)
    except (h2.exceptions.ProtocolError, OSError):
        refused = streams  # the server closed the connection
    return c, refused
