"""HTTP/2 with request trailers: no body chunk carries end_of_stream, so the filter decides in
its trailers callback. The upstream must see a verified body exactly once and a forged one
never."""
import hashlib
import json
import socket
import uuid

import h2.config
import h2.connection
import h2.events

from signers import PRESETS


def h2_post(port: int, path: str, headers: dict, chunks: list[bytes], trailers: dict) -> tuple[int, bytes]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(":method", "POST"), (":path", path), (":scheme", "http"), (":authority", "127.0.0.1"),
                            *[(k.lower(), v) for k, v in headers.items()]])
    for chunk in chunks:
        conn.send_data(sid, chunk)
    conn.send_headers(sid, list(trailers.items()), end_stream=True)
    sock.sendall(conn.data_to_send())
    status, data, done = 0, b"", False
    try:
        while not done:
            received = sock.recv(65535)
            if not received:
                break
            for event in conn.receive_data(received):
                if isinstance(event, h2.events.ResponseReceived):
                    status = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.DataReceived):
                    data += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                    done = True
            sock.sendall(conn.data_to_send())
    finally:
        sock.close()
    return status, data


def test_http2_request_with_trailers_is_verified_before_it_goes_upstream(demo, secrets):
    path, sign, var, _ = PRESETS["github"]
    body = json.dumps({"id": uuid.uuid4().hex, "pad": "x" * 3000}).encode()
    chunks = [body[:1000], body[1000:2000], body[2000:]]
    headers = sign(secrets[var], body, 0, "h2-delivery")
    status, data = h2_post(demo.envoy.port, path, headers, chunks, {"x-checksum": "abc"})
    assert status == 200, data
    digest = hashlib.sha256(body).hexdigest()
    assert sum(e["body_sha256"] == digest for e in demo.backend.events()) == 1

    forged = body.replace(b'"pad"', b'"pAd"')
    status, data = h2_post(demo.envoy.port, path, headers, [forged[:1500], forged[1500:]], {"x-checksum": "abc"})
    assert status == 401
    assert json.loads(data) == {"error": "invalid_signature", "policy": "github"}
    assert not any(e["body_sha256"] == hashlib.sha256(forged).hexdigest() for e in demo.backend.events())
