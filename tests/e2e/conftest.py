import os

import pytest

import harness
from harness import CLI, DEMO_CONFIG, NATIVE, WASM, Stack
from signers import fresh_secrets

# The suite runs against each build: the wasm module and the native dynamic module.
# WEBHOOK_GUARD_BUILDS=wasm (or native) narrows it.
BUILDS = [b for b in os.environ.get("WEBHOOK_GUARD_BUILDS", "wasm,native").split(",") if b]


def pytest_configure(config):
    config.addinivalue_line("markers", "build(name): run only against that build (a feature only it has, "
                                       "or a test of files that do not depend on the build)")


def pytest_sessionstart(session):
    needed = [CLI] + [{"wasm": WASM, "native": NATIVE}[b] for b in BUILDS]
    for artifact in needed:
        if not artifact.exists():
            raise pytest.UsageError(f"{artifact} is missing: build it first (scripts/test.sh does)")


def pytest_collection_modifyitems(config, items):
    """Drops the runs of build-specific tests under the other build."""
    keep, drop = [], []
    for item in items:
        marker = item.get_closest_marker("build")
        build = getattr(item, "callspec", None) and item.callspec.params.get("build")
        (drop if marker and build and marker.args[0] != build else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session", autouse=True, params=BUILDS)
def build(request):
    """Every test runs once per build; the Envoys it starts run that build."""
    harness.BUILD = request.param
    yield request.param


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed:
        for name in item.fixturenames:
            value = item.funcargs.get(name)
            if isinstance(value, Stack):
                rep.sections.append((f"logs of {name}", value.logs()))


@pytest.fixture(scope="session")
def secrets():
    return fresh_secrets()


@pytest.fixture(scope="session")
def demo(secrets, build):
    """The demo configuration (envoy/webhook-guard.json) in the real Envoy, 2 workers."""
    stack = Stack(DEMO_CONFIG.read_text(), secrets)
    yield stack
    stack.stop()
