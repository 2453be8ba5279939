"""A private RabbitMQ on loopback for the celery backend's tests (the broker of the tests).

Usage::

    with running_rabbitmq(tmp_path) as broker:
        broker.url              -> "amqp://guest:guest@127.0.0.1:PORT//"
        broker.restart()        -> stop and start the same node (same data, same port)
        broker.queue_depth("wbdwi.gpu")

Everything of the node lives in a temporary folder: its Mnesia data, its logs,
its configuration, its Erlang cookie (``HOME`` points there) and its own epmd
(``ERL_EPMD_PORT``), so it shares nothing with a system RabbitMQ or another
test's broker. AMQP and Erlang distribution listen on free ports of
127.0.0.1 only. :func:`running_rabbitmq` waits until the node answers
``rabbitmqctl await_startup`` and an AMQP connection succeeds (failing with the
node's log when it does not), and always stops it (``rabbitmqctl stop``, then
kill) and its epmd.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import IN_CI, free_port

__all__ = ["RabbitMQ", "rabbitmq_sbin", "running_rabbitmq"]

_START_TIMEOUT_S = 60.0
# Longer than any test job; the celery backend's deployment sets it above the longest exam.
_CONSUMER_TIMEOUT_MS = 30 * 60 * 1000


def rabbitmq_sbin() -> Path:
    """Folder of RabbitMQ's own scripts (``rabbitmq-server``, ``rabbitmqctl``), or skip.

    The Debian wrapper ``/usr/sbin/rabbitmq-server`` switches to the ``rabbitmq``
    user and its system folders; the scripts under ``/usr/lib/rabbitmq`` run as
    the caller with the folders given in the environment. Missing RabbitMQ skips
    the test (a failure under ``CI=true``).
    """
    found = sorted(glob.glob("/usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin"))
    if found and Path(found[-1], "rabbitmq-server").exists():
        return Path(found[-1])
    message = "rabbitmq-server not found (install the Debian package rabbitmq-server: make tools)"
    if IN_CI:
        pytest.fail(f"CI=true and {message}")
    pytest.skip(message)


@dataclass
class RabbitMQ:
    """A private RabbitMQ node: ports, folders, environment; stop and restart."""

    sbin: Path
    base: Path
    amqp_port: int
    dist_port: int
    epmd_port: int
    nodename: str
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """AMQP URL of the default virtual host (user guest, allowed from loopback)."""
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}//"

    def log(self) -> str:
        """The node's console output and log files so far (for assertion messages)."""
        parts = []
        for path in [*sorted((self.base / "log").glob("*")), self.base / "console.log"]:
            if path.is_file():
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}")
        return "\n".join(parts)

    def ctl(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run ``rabbitmqctl ARGS`` against this node (same cookie and epmd)."""
        return subprocess.run(
            [str(self.sbin / "rabbitmqctl"), "-n", self.nodename, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self) -> None:
        """Start the node and wait until it accepts AMQP connections."""
        console = (self.base / "console.log").open("ab")
        self.process = subprocess.Popen(
            [str(self.sbin / "rabbitmq-server")],
            env=self.env,
            stdout=console,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        console.close()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"RabbitMQ exited with {self.process.returncode}:\n{self.log()}")
            done = self.ctl("await_startup", "--timeout", "5", timeout=20)
            if done.returncode == 0 and _amqp_port_open(self.amqp_port):
                return
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"RabbitMQ did not start within {_START_TIMEOUT_S:.0f} s:\n{self.log()}")

    def stop(self) -> None:
        """Stop the node (``rabbitmqctl stop``, then SIGKILL of its process group)."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            try:
                self.ctl("stop", timeout=30)
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        self.process = None

    def restart(self) -> None:
        """Stop and start the same node: same ports, same data (durable queues survive)."""
        self.stop()
        self.start()

    def vhost_url(self, vhost: str) -> str:
        """A new virtual host ``vhost`` (guest may use it) and its AMQP URL.

        Each test on a shared broker gets its own: no message of one test
        reaches another.
        """
        for args in (
            ("add_vhost", vhost),
            ("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"),
        ):
            done = self.ctl(*args)
            if done.returncode != 0:
                raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {done.stderr}")
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/{vhost}"

    def queue_depth(self, name: str, vhost: str = "/") -> int:
        """Messages in queue ``name`` (ready + unacknowledged); 0 when it does not exist."""
        done = self.ctl("list_queues", "-p", vhost, "-q", "--no-table-headers", "name", "messages")
        for line in done.stdout.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == name:
                return int(parts[1])
        return 0

    def kill_epmd(self) -> None:
        """Stop this node's private epmd."""
        epmd = shutil.which("epmd") or next(
            iter(glob.glob("/usr/lib/erlang/erts-*/bin/epmd")), None
        )
        if epmd:
            subprocess.run(
                [epmd, "-port", str(self.epmd_port), "-kill"],
                capture_output=True,
                timeout=10,
                check=False,
            )


def _amqp_port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            return len(sock.recv(8)) > 0
    except OSError:
        return False


def _write_config(base: Path, amqp_port: int) -> Path:
    config = base / "rabbitmq.conf"
    config.write_text(
        "\n".join(
            [
                f"listeners.tcp.default = 127.0.0.1:{amqp_port}",
                "loopback_users.guest = true",
                f"consumer_timeout = {_CONSUMER_TIMEOUT_MS}",
                "disk_free_limit.absolute = 50MB",
                "log.console = false",
                "log.file.level = info",
                "",
            ]
        )
    )
    return config


@contextmanager
def running_rabbitmq(tmp_path: Path) -> Iterator[RabbitMQ]:
    """Start a private RabbitMQ under ``tmp_path``; yield it; always stop it."""
    sbin = rabbitmq_sbin()
    base = tmp_path / "rabbitmq"
    for sub in ("mnesia", "log", "home"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    amqp_port, dist_port, epmd_port = free_port(), free_port(), free_port()
    nodename = f"wbdwi-test-{uuid.uuid4().hex[:8]}@localhost"
    plugins = base / "enabled_plugins"
    plugins.write_text("[].\n")
    config = _write_config(base, amqp_port)
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("RABBITMQ_", "ERL_"))
    }
    env.update(
        {
            "HOME": str(base / "home"),  # private Erlang cookie
            "ERL_EPMD_PORT": str(epmd_port),  # private epmd
            "RABBITMQ_NODENAME": nodename,
            "RABBITMQ_USE_LONGNAME": "false",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(amqp_port),
            "RABBITMQ_DIST_PORT": str(dist_port),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_CONFIG_FILE": str(config.with_suffix("")),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(plugins),
            "RABBITMQ_PID_FILE": str(base / "rabbitmq.pid"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
            "ERL_INETRC": str(base / "erl_inetrc"),
        }
    )
    (base / "erl_inetrc").write_text('{host, {127,0,0,1}, ["localhost"]}.\n')
    broker = RabbitMQ(
        sbin=sbin,
        base=base,
        amqp_port=amqp_port,
        dist_port=dist_port,
        epmd_port=epmd_port,
        nodename=nodename,
        env=env,
    )
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()
        broker.kill_epmd()
