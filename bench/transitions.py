"""Counts the wasm build's host transitions per request, by path: VM entries (each callback
Envoy makes into the module, including the allocation it asks for before returning data) and
host calls (each call from the module into Envoy).

Builds the filter with `--features count-transitions` (its own target dir), runs Envoy with the
benchmark configuration, sends a few requests of each kind and reads the per-request report the
counting build logs. Prints a Markdown table; `--json` prints the numbers.

    .venv/bin/python bench/transitions.py
"""
import argparse
import base64
import json
import pathlib
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import bench  # noqa: E402

COUNTING = bench.ROOT / "target/count/wasm32-wasip1/release/webhook_guard.wasm"


def build() -> None:
    subprocess.run(["cargo", "build", "--quiet", "--release", "--target", "wasm32-wasip1", "-p",
                    "webhook-guard-filter", "--features", "count-transitions", "--target-dir",
                    str(bench.ROOT / "target/count")], check=True, cwd=bench.ROOT)


def post(url: str, body: bytes, headers: dict) -> int:
    req = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def reports(log: pathlib.Path) -> list[dict]:
    return [json.loads(m) for m in re.findall(r'(\{"event":"webhook_guard_transitions"[^}]*\})',
                                               log.read_text(errors="replace"))]


def measure(work: pathlib.Path, name: str, plugin: dict, requests: list) -> dict:
    """Sends `requests` ((body, headers) pairs) and returns the last request's report (the
    first ones warm up the VM)."""
    server, url = bench.start_envoy(work, with_filter=True, plugin=plugin, build="wasm")
    log = work / f"envoy-{bench._base_id}.log"
    statuses = [post(url, body, headers) for body, headers in requests]
    deadline = time.monotonic() + 5
    while len(reports(log)) < len(requests) and time.monotonic() < deadline:
        time.sleep(0.1)
    server.stop()
    got = reports(log)
    if len(got) < len(requests):
        raise RuntimeError(f"{name}: {len(got)} reports for {len(requests)} requests")
    events = got[-1]["events"]
    calls = [e for e in events if e.startswith("proxy_")]
    # proxy_on_delete follows the report: one more entry than listed.
    return {"status": statuses[-1], "vm_entries": len(events) - len(calls) + 1, "hostcalls": len(calls),
            "events": events + ["delete"]}


def measure_all() -> dict:
    """Builds the counting filter and returns each path's report."""
    build()
    default = bench.WASM
    bench.WASM = COUNTING
    try:
        return _measure_all()
    finally:
        bench.WASM = default


def _measure_all() -> dict:
    ts = str(int(time.time()))
    body = (b'{"type":"bench","data":"' + b"x" * 1024)[:1022] + b'"}'

    def signed(msg_id: str) -> tuple[bytes, dict]:
        return body, {"webhook-id": msg_id, "webhook-timestamp": ts, "webhook-signature": bench.sign(msg_id, ts, body),
                      "content-type": "application/json"}

    bad = (body, {**signed("msg_bad")[1], "webhook-signature": "v1," + base64.b64encode(b"\0" * 32).decode()})
    policy = bench.PLUGIN["policies"][0]
    unmatched = {**bench.PLUGIN, "policies": [{**policy, "match": {"path_prefix": "/other"}}]}
    nodedup = {**bench.PLUGIN, "policies": [{**policy, "dedup": {"enabled": False}}]}
    rows = {}
    with tempfile.TemporaryDirectory(prefix="webhook-guard-transitions-") as d:
        work = pathlib.Path(d)
        rows["unmatched"] = measure(work, "unmatched", unmatched, [signed(f"u{i}") for i in range(3)])
        rows["accepted"] = measure(work, "accepted", bench.PLUGIN, [signed(f"a{i}") for i in range(3)])
        rows["accepted, no replay protection"] = measure(work, "nodedup", nodedup, [signed("n")] * 3)
        rows["replay"] = measure(work, "replay", bench.PLUGIN, [signed("r")] * 3)
        rows["invalid signature"] = measure(work, "invalid", bench.PLUGIN, [bad] * 3)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    rows = measure_all()
    if a.json:
        print(json.dumps(rows, indent=1))
        return 0
    print("| path (1 KiB, local store) | status | VM entries | host calls | in order (host calls in bold) |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        seq = ", ".join(f"**{e[6:]}**" if e.startswith("proxy_") else e for e in r["events"])
        print(f"| {name} | {r['status']} | {r['vm_entries']} | {r['hostcalls']} | {seq} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
