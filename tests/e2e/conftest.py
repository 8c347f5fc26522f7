import pytest

from harness import CLI, DEMO_CONFIG, WASM, Stack
from signers import fresh_secrets


def pytest_sessionstart(session):
    for artifact in (WASM, CLI):
        if not artifact.exists():
            raise pytest.UsageError(f"{artifact} is missing: build it first (scripts/test.sh does)")


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
def demo(secrets):
    """The demo configuration (envoy/webhook-guard.json) in the real Envoy, 2 workers."""
    stack = Stack(DEMO_CONFIG.read_text(), secrets)
    yield stack
    stack.stop()
