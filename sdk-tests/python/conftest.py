"""A real presenced (release build, embedded store, its own token issuer) on a free loopback port.

With PRESENCED_SDK_REDIS_URLS (comma-separated seed URLs of a Redis Cluster), the server is the first node
of a two-node deployment on that cluster (store = "redis", its own key prefix, one signing key): the
suites then run against a node whose every write, timer and notification goes through the cluster while
a second node shares it.
"""

import asyncio
import inspect
import os
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("PRESENCED_BIN", REPO / "target" / "release" / "presenced"))

ADELE = "7d3b5e0a-2c61-4f3e-9d1a-5a2b8c9e0f11"
ALEX = "5e9a1c7b-8d44-4b0e-a3f2-6c1d2e3f4a5b"
APP = "0a0f1e5c-8f62-4d3f-9d52-3b1c3b0d5e11"


REDIS_URLS = [url for url in os.environ.get("PRESENCED_SDK_REDIS_URLS", "").split(",") if url]


def wait_for_port(port: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("presenced did not start")
            time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Presenced:
    """One running server with its own data directory."""

    def __init__(self, throttle_limit: int = 10000, throttle_window_seconds: int = 30, tls=None, app_secret_sha256=None):
        """With `tls` (certificate and key files), HTTPS only; with `app_secret_sha256`, APP has that client
        secret at the token endpoint and is granted Presence.ReadWrite.All."""
        self.dir = tempfile.TemporaryDirectory()
        self.port = free_port()
        self.base = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        config = (REPO / "presenced.example.toml").read_text()
        if tls:
            config = config.replace('# tls_cert_file = "/etc/presenced/cert.pem"', f'tls_cert_file = "{tls[0]}"')
            config = config.replace('# tls_key_file = "/etc/presenced/key.pem"', f'tls_key_file = "{tls[1]}"')
        if app_secret_sha256:
            app_line = f'id = "{APP}"'
            assert app_line in config
            config = config.replace(
                app_line,
                f'{app_line}\nclientSecretSha256 = ["{app_secret_sha256}"]\napplicationPermissions = ["Presence.ReadWrite.All"]',
            )
        config = config.replace('listen = "127.0.0.1:8080"', f'listen = "127.0.0.1:{self.port}"')
        config = config.replace('data_dir = "presenced-data"', f'data_dir = "{self.dir.name}"')
        config = config.replace("throttle_limit = 10000", f"throttle_limit = {throttle_limit}")
        config = config.replace("throttle_window_seconds = 30", f"throttle_window_seconds = {throttle_window_seconds}")
        # The webhook receiver of the subscription test listens on plain HTTP on this machine.
        config = config.replace("notification_allow_http = false", "notification_allow_http = true")
        config = config.replace("notification_allow_internal = false", "notification_allow_internal = true")
        if REDIS_URLS:
            urls = ", ".join(f'"{url}"' for url in REDIS_URLS)
            config = config.replace('store = "sqlite"', 'store = "redis"')
            config = config.replace("redis_urls = []", f"redis_urls = [{urls}]")
            config = config.replace('redis_key_prefix = "pd:"', f'redis_key_prefix = "sdk-{uuid.uuid4().hex}:"')
            config = config.replace(
                '# signing_key_file = "/etc/presenced/signing-key.pem"',
                f'signing_key_file = "{self.dir.name}/signing-key.pem"',
            )
        self.config = Path(self.dir.name) / "presenced.toml"
        self.config.write_text(config)
        self.process = subprocess.Popen(
            [str(BINARY), "--config", str(self.config), "serve", "--test-clock"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self.process)
        self.second = None
        if REDIS_URLS:
            port = free_port()
            self.second = subprocess.Popen(
                [str(BINARY), "--config", str(self.config), "--data-dir", f"{self.dir.name}/second", "serve",
                 "--test-clock", "--listen", f"127.0.0.1:{port}"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            wait_for_port(port, self.second)

    def token(self, *args: str) -> str:
        output = subprocess.run(
            [str(BINARY), "--config", str(self.config), "token", *args], check=True, capture_output=True, text=True
        )
        return output.stdout.strip()

    def stop(self) -> None:
        for process in [self.process, self.second]:
            if process is not None:
                process.kill()
                process.wait()
        self.dir.cleanup()


@pytest.fixture()
def server():
    running = Presenced()
    yield running
    running.stop()


@pytest.fixture()
def throttled_server():
    running = Presenced(throttle_limit=2, throttle_window_seconds=4)
    yield running
    running.stop()


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """Runs `async def` tests in one event loop each (the SDK's HTTP client lives in that loop)."""
    if inspect.iscoroutinefunction(pyfuncitem.obj):
        arguments = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
        asyncio.run(pyfuncitem.obj(**arguments))
        return True
    return None
