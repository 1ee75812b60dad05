"""Real processes for the tests: a ``redis-server`` and ``switchyard``
gateway instances, each on a free loopback port, every wait bounded,
everything killed (and reaped) when the tests end.

The gateway binary is ``$SWITCHYARD_BIN``, else ``target/debug/switchyard``
at the top of the repository.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent

ADMIN = "admin-token-0123456789abcdef"
WRITER = "writer-token-0123456789abcdef"
NODE = "node-token-0123456789abcdef01"
API_KEY = "svc-key-0123456789abcdef0123"
PASSWORD = "correct horse battery staple"

TOKENS = ",".join(
    [
        f"admin:{ADMIN}:operator.admin",
        f"writer:{WRITER}:operator.read operator.write",
        f"node-1:{NODE}:node",
    ]
)
API_KEYS = f"svc:{API_KEY}:operator.read"

# The default channel rules, plus `feed:` channels that keep history.
CONFIG = """
[auth]
password_scopes = ["operator.read", "operator.write"]

[[channels.rules]]
prefix = "feed:"
subscribe = "authenticated"
publish = "write"
history = 1000

[[channels.rules]]
prefix = "public:"
subscribe = "authenticated"
publish = "write"

[[channels.rules]]
prefix = "user:"
subscribe = "owner"
publish = "admin"
presence = false

[[channels.rules]]
prefix = "conn:"
subscribe = "owner"
publish = "admin"
presence = false

[[channels.rules]]
prefix = "private:"
subscribe = "claim"
publish = "claim"

[[channels.rules]]
prefix = "global"
subscribe = "authenticated"
publish = "admin"
presence = false

[[channels.rules]]
prefix = "approval"
subscribe = "approvals"
publish = "admin"
presence = false
"""

START_WAIT = 15.0


def binary() -> str:
    path = os.environ.get("SWITCHYARD_BIN") or str(PACKAGE_DIR / ".." / ".." / "target" / "debug" / "switchyard")
    path = str(Path(path).resolve())
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"no gateway binary at {path}: build it or set SWITCHYARD_BIN")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    # If the test process is killed outright, its servers go with it.
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, check: callable) -> None:  # type: ignore[valid-type]
    deadline = time.monotonic() + START_WAIT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited early with {proc.returncode}")
        if check():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} not up within {START_WAIT} s")


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


class Redis:
    """A redis-server without persistence: ``kill9()`` then ``start()``
    brings it back on the same port, empty."""

    def __init__(self, workdir: Path) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed")
        self.exe = exe
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        assert self.proc is None, "already running"
        self.proc = subprocess.Popen(
            [
                self.exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )

        pid = self.proc.pid

        def answers() -> bool:
            # The server started here, not another test's that took the
            # port meanwhile (it would answer PING too).
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"INFO server\r\n")
                    reply = b""
                    while b"\r\n" not in reply:
                        chunk = s.recv(65536)
                        if not chunk:
                            return False
                        reply += chunk
                    head, _, body = reply.partition(b"\r\n")
                    if not head.startswith(b"$"):
                        return False
                    while len(body) < int(head[1:]):
                        chunk = s.recv(65536)
                        if not chunk:
                            return False
                        body += chunk
                    return f"process_id:{pid}\r\n".encode() in body
            except (OSError, ValueError):
                return False

        try:
            _wait_port(self.port, self.proc, "redis-server", answers)
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def kill9(self) -> None:
        """SIGKILL: everything it held is gone."""
        _stop(self.proc)
        self.proc = None

    def stop(self) -> None:
        _stop(self.proc)
        self.proc = None


class Gateway:
    """One gateway process; ``kill9()`` then ``start()`` brings it back on
    the same port with the same instance id."""

    def __init__(self, instance_id: str, workdir: Path, redis: Redis | None = None) -> None:
        self.instance_id = instance_id
        self.port = free_port()
        self.redis = redis
        self.workdir = workdir
        self.config = workdir / "switchyard.toml"
        self.config.write_text(CONFIG)
        self.stderr_path = workdir / f"{instance_id}.stderr"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http_base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
        env.update(
            {
                "SWITCHYARD_CONFIG": str(self.config),
                "SWITCHYARD_LOG": os.environ.get("SWITCHYARD_TEST_LOG", "warn"),
                "SWITCHYARD_PORT": str(self.port),
                "SWITCHYARD_INSTANCE_ID": self.instance_id,
                "SWITCHYARD_TOKENS": TOKENS,
                "SWITCHYARD_API_KEYS": API_KEYS,
                "SWITCHYARD_PASSWORD": PASSWORD,
                "SWITCHYARD_LIMITS__NODE_TTL_MS": "3000",
                "SWITCHYARD_LIMITS__PRESENCE_TICK_MS": "60000",
            }
        )
        if self.redis is not None:
            env["SWITCHYARD_REDIS_URL"] = self.redis.url
        return env

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                [binary()],
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                preexec_fn=_die_with_parent,
            )
        try:
            _wait_port(self.port, self.proc, f"gateway {self.instance_id}", self.healthy)
        except BaseException as e:
            self.stop()
            raise RuntimeError(f"{e}\n--- stderr ---\n{self.stderr_text()}") from None

    def healthy(self) -> bool:
        return self.status("/health") == 200

    def status(self, path: str) -> int | None:
        """The status of ``GET path`` (None when nothing answers)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
        try:
            conn.request("GET", path)
            return conn.getresponse().status
        except OSError:
            return None
        finally:
            conn.close()

    def kill9(self) -> None:
        """SIGKILL: the process cleans nothing up."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self) -> None:
        """SIGTERM, and wait (bounded) until the drain has ended."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise RuntimeError(f"gateway {self.instance_id} did not exit within 20 s of SIGTERM") from None

    def stop(self) -> None:
        _stop(self.proc)

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="switchyard-py-"))
