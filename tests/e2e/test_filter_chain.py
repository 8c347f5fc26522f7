"""webhook-guard behind a filter that buffers the body first (envoy.filters.http.buffer, as
many chains have for other reasons). That filter hands the next filter its own buffer as the
"received" data; a filter that read it as buffered + received would see the body twice and
reject every genuine delivery. The backend must get each genuine delivery once, and forgeries
and replays never, over HTTP/1.1 and HTTP/2, small and large."""
import hashlib
import json
import time
import uuid

import pytest
import requests

from harness import DEMO_CONFIG, ROOT, Backend, Envoy
from signers import PRESETS
from test_http2 import h2_post

BUFFER_FILTER = """          - name: envoy.filters.http.buffer
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer
              max_request_bytes: 1048576
"""


@pytest.fixture(scope="module")
def buffered(secrets, build, tmp_path_factory):
    work = tmp_path_factory.mktemp("buffer-first")
    template = work / "envoy.yaml.tmpl"
    text = (ROOT / "envoy/envoy.yaml.tmpl").read_text()
    assert text.count("${GUARD_FILTER}") == 1
    template.write_text(text.replace("${GUARD_FILTER}", BUFFER_FILTER + "${GUARD_FILTER}"))
    backend = Backend(work)
    envoy = Envoy(work, backend.port, DEMO_CONFIG.read_text(), secrets, template=template)
    yield envoy, backend
    envoy.stop()
    backend.stop()


def digests(backend: Backend) -> list[str]:
    return [e["body_sha256"] for e in backend.events()]


@pytest.mark.parametrize("size", [64, 200_000])
def test_http1_delivery_behind_a_buffering_filter_reaches_the_backend_once(buffered, secrets, size):
    envoy, backend = buffered
    path, sign, var, _ = PRESETS["standard"]
    body = json.dumps({"id": uuid.uuid4().hex, "pad": "x" * size}).encode()
    headers = sign(secrets[var], body, int(time.time()), f"msg_{uuid.uuid4().hex}")
    first = requests.post(envoy.url + path, data=body, headers=headers, timeout=10)
    assert first.status_code == 200, first.text
    replay = requests.post(envoy.url + path, data=body, headers=headers, timeout=10)
    assert replay.status_code == 409 and replay.json()["error"] == "replayed"
    forged = body[:-2] + b'!"}'
    bad = requests.post(envoy.url + path, data=forged, headers=headers, timeout=10)
    assert bad.status_code == 401 and bad.json()["error"] == "invalid_signature"
    seen = digests(backend)
    assert seen.count(hashlib.sha256(body).hexdigest()) == 1
    assert hashlib.sha256(forged).hexdigest() not in seen


def test_http2_chunked_delivery_behind_a_buffering_filter_reaches_the_backend_once(buffered, secrets):
    envoy, backend = buffered
    path, sign, var, _ = PRESETS["github"]
    body = json.dumps({"id": uuid.uuid4().hex, "pad": "y" * 5000}).encode()
    headers = sign(secrets[var], body, 0, f"h2-{uuid.uuid4()}")
    status, data = h2_post(envoy.port, path, headers, [body[:2000], body[2000:4000], body[4000:]], {"x-t": "1"})
    assert status == 200, data
    forged = body.replace(b'"pad"', b'"pAd"')
    status, data = h2_post(envoy.port, path, headers, [forged[:100], forged[100:]], {"x-t": "1"})
    assert status == 401, data
    seen = digests(backend)
    assert seen.count(hashlib.sha256(body).hexdigest()) == 1
    assert hashlib.sha256(forged).hexdigest() not in seen
