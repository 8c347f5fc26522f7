"""scripts/demo.sh as a user runs it: the table mode exits 0 with every row as expected, and
--serve stays up until SIGTERM, then stops its children."""
import os
import pathlib
import signal
import subprocess
import time

import pytest
import requests

from harness import ROOT, free_port, wait_until


def demo_env():
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_SECRET", "_SECRET_PREVIOUS"))}
    env.update(WEBHOOK_DEMO_ENVOY_PORT=str(free_port()), WEBHOOK_DEMO_ADMIN_PORT=str(free_port()),
               WEBHOOK_DEMO_BACKEND_PORT=str(free_port()), WEBHOOK_DEMO_BACKEND_ADMIN_PORT=str(free_port()))
    return env


@pytest.mark.build("wasm")
def test_demo_table_runs_and_every_scenario_behaves():
    res = subprocess.run([str(ROOT / "scripts/demo.sh")], env=demo_env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    out = res.stdout
    assert "UNEXPECTED" not in out
    assert out.count(" ok\n") >= 48 + 6 + 6
    assert "stripe    rotated secret      200" in out
    assert "github    exact replay        409  replayed" in out
    assert "github    provider retry      200  forwarded                        2 times" in out
    assert "1 x 200, 19 x 409" in out
    assert "unsigned POST /webhooks%2Fgithub                400  refused by Envoy       no              ok" in out
    assert "captured delivery, reset after forwarding x3    409  replayed               once            ok" in out
    assert "timestamp_out_of_window" in out and '"event":"webhook_rejected"' in out
    assert "GITHUB_WEBHOOK_SECRET=demo-github-secret" in out  # demo values are printed
    # The seed's three metrics for the run: every row has a success rate and a latency bound.
    summary = out.split("== key metrics of this run", 1)[1]
    assert "signature success" in summary and "replays rejected" in summary and "under 150 ms" in summary
    assert "   all " in summary and "<= " in summary and "replay protection: 0 of" in summary


@pytest.mark.build("native")
def test_demo_native_table_gives_the_same_answers():
    res = subprocess.run([str(ROOT / "scripts/demo.sh"), "--native"], env=demo_env(), capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    out = res.stdout
    assert "native Envoy dynamic module" in out and "UNEXPECTED" not in out
    assert "== key metrics of this run" in out and "replay protection: 0 of" in out
    assert out.count(" ok\n") >= 48 + 6 + 6
    assert "captured delivery, reset after forwarding x3    409  replayed               once            ok" in out
    assert '"event":"webhook_rejected"' in out


@pytest.mark.build("wasm")
def test_demo_serve_stays_up_until_sigterm_and_cleans_up():
    env = demo_env()
    proc = subprocess.Popen([str(ROOT / "scripts/demo.sh"), "--serve"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        admin = f"http://127.0.0.1:{env['WEBHOOK_DEMO_ADMIN_PORT']}/ready"
        wait_until(lambda: requests.get(admin, timeout=1).text.strip() == "LIVE", 120, "demo --serve")
        envoy = f"http://127.0.0.1:{env['WEBHOOK_DEMO_ENVOY_PORT']}"
        resp = requests.post(envoy + "/webhooks/github", data=b"{}", timeout=5)
        assert resp.json() == {"error": "missing_signature", "policy": "github"}
        time.sleep(1)
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    # Its Envoy and Flask are gone: the ports refuse connections.
    for port in ("WEBHOOK_DEMO_ENVOY_PORT", "WEBHOOK_DEMO_BACKEND_PORT"):
        wait_until(lambda: _refused(int(env[port])), 10, f"port {port} to close")


def _refused(port: int) -> bool:
    try:
        requests.get(f"http://127.0.0.1:{port}/", timeout=1)
        return False
    except requests.ConnectionError:
        return True


def _replica_ports() -> dict[str, str]:
    """Eight consecutive ports for the two-replica demo (Envoy and admin ports and their
    successors, the backend's two, etcd's two), below the kernel's ephemeral range: a port in
    that range can be taken as the source port of any outgoing connection between being chosen
    and being bound (replica #2's listener once failed so)."""
    import random
    import socket

    low = int(pathlib.Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(100):
        base = random.randrange(20000, max(20001, low - 8))
        try:
            socks = []
            for port in range(base, base + 8):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        names = ["ENVOY_PORT", None, "ADMIN_PORT", None, "BACKEND_PORT", "BACKEND_ADMIN_PORT", "ETCD_PORT",
                 "ETCD_PEER_PORT"]
        return {f"WEBHOOK_DEMO_{n}": str(base + k) for k, n in enumerate(names) if n}
    raise RuntimeError("no eight consecutive free ports below the ephemeral range")


@pytest.mark.build("wasm")
def test_demo_replicas_mode_admits_each_delivery_once_across_replicas():
    env = demo_env()
    env.update(_replica_ports())
    res = subprocess.run([str(ROOT / "scripts/demo.sh"), "--replicas", "2"], env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    out = res.stdout
    assert "UNEXPECTED" not in out and out.count(" ok\n") == 11, out
    assert "#2       same delivery, other replica    409  replayed" in out
    assert "#1       backend fails                   500  forwarded (backend failed) once" in out
    assert "#2       retry, other replica            200  forwarded                  2 times" in out
    assert "#2       etcd not answering              503  store_unavailable" in out
    assert "webhook_guard.etcd.calls" in out
    assert "== key metrics of this run" in out and "replay protection: " in out
    # Bad combinations are refused before anything starts.
    bad = subprocess.run([str(ROOT / "scripts/demo.sh"), "--replicas", "9"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "--replicas takes 1 to 4" in bad.stderr
