"""Run a real ``litellm`` proxy in a subprocess, for end-to-end tests and benchmarks.

::

    path = write_config(tmp / "proxy.yaml", base_config([mock_deployment("m")]))
    with ProxyServer(path) as proxy:
        httpx.post(f"{proxy.base_url}/v1/chat/completions", headers=proxy.auth_headers, json=...)

The proxy runs in its own process group with ``LITELLM_LOCAL_MODEL_COST_MAP=True``
and a random master key; its output goes to a log file whose tail is part of
every start-up error. :meth:`ProxyServer.stop` always takes down the whole
group, and any proxy still running when the interpreter exits is stopped too.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from costkit_litellm.testing.ports import free_port

__all__ = [
    "COSTKIT_CALLBACK",
    "ProxyPool",
    "ProxyServer",
    "ProxyStartError",
    "base_config",
    "enable_costkit",
    "free_port",
    "mock_deployment",
    "openai_deployment",
    "write_config",
]

COSTKIT_CALLBACK = "costkit_litellm.litellm_adapter.proxy.costkit_callback"
"""The ``litellm_settings.callbacks`` entry that loads the pack."""

_RUNNING: set[ProxyServer] = set()

KEEPALIVE_S = 75
"""Seconds the test proxies keep an idle client connection open (uvicorn's default is 5)."""


class ProxyStartError(RuntimeError):
    """The proxy exited, or never became healthy, during start-up."""

    def __init__(self, message: str, *, exit_code: int | None, log_tail: str) -> None:
        super().__init__(f"{message}\n--- proxy log tail ---\n{log_tail}")
        self.exit_code = exit_code
        """The process exit code, or ``None`` if it was still running (timeout)."""
        self.log_tail = log_tail
        """The last lines of the proxy's log."""


def _litellm_executable() -> str:
    """The ``litellm`` script of this interpreter's environment, else the one on PATH."""
    beside = Path(sys.executable).with_name("litellm")
    if beside.exists():
        return str(beside)
    found = shutil.which("litellm")
    if found is None:
        raise FileNotFoundError("no `litellm` script beside sys.executable nor on PATH")
    return found


class ProxyServer:
    """A ``litellm --config FILE --port N`` subprocess; start, use, stop."""

    def __init__(
        self,
        config_path: str | os.PathLike[str],
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        master_key: str | None = None,
        *,
        extra_args: Sequence[str] = (),
    ) -> None:
        """Prepare a proxy; nothing runs until :meth:`start`.

        ``env`` is added to (and overrides) this process's environment.
        ``master_key`` defaults to a random strong key, exported as
        ``LITELLM_MASTER_KEY``; ``port`` defaults to a free port.
        """
        self.config_path = Path(config_path)
        self.env = dict(env or {})
        self.port = port if port is not None else free_port()
        self._chose_port = port is None
        self.master_key = master_key if master_key is not None else f"sk-costkit-{secrets.token_hex(16)}"
        self.extra_args = tuple(extra_args)
        self._log_path: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (append ``/v1/...`` or ``/health/...``)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def auth_headers(self) -> dict[str, str]:
        """``Authorization`` header with the master key."""
        return {"Authorization": f"Bearer {self.master_key}"}

    @property
    def pid(self) -> int | None:
        """The process id (also the process group id), ``None`` before start."""
        return self._process.pid if self._process is not None else None

    @property
    def log_path(self) -> Path | None:
        """Where the proxy's stdout and stderr go."""
        return self._log_path

    def log_text(self) -> str:
        """Everything the proxy has logged so far."""
        if self._log_path is None or not self._log_path.exists():
            return ""
        return self._log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 60) -> str:
        """The last ``lines`` lines of the log."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    # -- lifecycle ---------------------------------------------------------

    def _spawn(self) -> subprocess.Popen[bytes]:
        if self._process is not None:
            raise RuntimeError("ProxyServer already started")
        log_dir = tempfile.mkdtemp(prefix="costkit-proxy-")
        weakref.finalize(self, shutil.rmtree, log_dir, ignore_errors=True)
        self._log_path = Path(log_dir) / "proxy.log"
        env = {
            **os.environ,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_MASTER_KEY": self.master_key,
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }
        command = [_litellm_executable(), "--config", str(self.config_path), "--port", str(self.port)]
        command += ["--host", "127.0.0.1", *self.extra_args]
        if "--keepalive_timeout" not in self.extra_args:
            # uvicorn closes an idle connection after 5 s, as httpx's pool expires one: a client that picks a
            # pooled connection just as the server closes it gets a connection error for a request never read.
            # The server keeps them longer, so the client's pool always lets go first (as behind a load balancer).
            command += ["--keepalive_timeout", str(KEEPALIVE_S)]
        with self._log_path.open("wb") as log:
            self._process = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so stop() can take all of it
            )
        _RUNNING.add(self)
        return self._process

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/health/liveliness", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _answers_our_key(self) -> bool:
        """False when whoever answers on our port refuses our master key (another proxy took it; without
        a database LiteLLM answers a wrong key with a 400, not a 401)."""
        request = urllib.request.Request(f"{self.base_url}/v1/models", headers=self.auth_headers)
        try:
            with urllib.request.urlopen(request, timeout=5):
                return True
        except urllib.error.HTTPError:
            return False
        except (urllib.error.URLError, OSError):
            return True  # not an answer from another proxy: our own process is judged by poll()

    def start(self, timeout_s: float = 120) -> ProxyServer:
        """Start the proxy and wait until ``/health/liveliness`` answers 200.

        Raises :class:`ProxyStartError` (with the log tail) if the process exits
        first or the timeout passes; the process is stopped in both cases. A port
        this object chose itself and lost to another process (test workers start
        servers side by side) is given up for a new one, twice at most.
        """
        deadline = time.monotonic() + timeout_s
        for _ in range(2 if self._chose_port else 0):
            if self._wait_started(self._spawn(), deadline, timeout_s, may_move=True):
                return self
            self.port = free_port()
        self._wait_started(self._spawn(), deadline, timeout_s, may_move=False)
        return self

    def _wait_started(
        self, process: subprocess.Popen[bytes], deadline: float, timeout_s: float, *, may_move: bool
    ) -> bool:
        """True once ``process`` is healthy and answers our key; False (stopped) when it lost its port
        and ``may_move``; otherwise raises ``ProxyStartError`` (stopped)."""
        while time.monotonic() < deadline:
            if (code := process.poll()) is not None:
                tail = self.log_tail()
                self.stop()
                if may_move and "address already in use" in tail.lower():
                    return False
                raise ProxyStartError(
                    f"litellm proxy exited with code {code} during start-up", exit_code=code, log_tail=tail
                )
            if self._healthy():
                if process.poll() is None and self._answers_our_key():
                    return True
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=30)  # another proxy answered: ours exits on the taken port
                continue
            time.sleep(0.2)
        tail = self.log_tail()
        self.stop()
        raise ProxyStartError(f"litellm proxy not healthy after {timeout_s}s", exit_code=None, log_tail=tail)

    def start_expecting_failure(self, timeout_s: float = 120) -> tuple[int, str]:
        """Start a proxy that should refuse to start; return (exit code, full log).

        Raises :class:`ProxyStartError` if it becomes healthy or is still
        running after the timeout.
        """
        process = self._spawn()
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                if (code := process.poll()) is not None:
                    return code, self.log_text()
                if self._healthy():
                    raise ProxyStartError(
                        "litellm proxy started but was expected to fail",
                        exit_code=None,
                        log_tail=self.log_tail(),
                    )
                time.sleep(0.2)
            raise ProxyStartError(
                f"litellm proxy still running after {timeout_s}s", exit_code=None, log_tail=self.log_tail()
            )
        finally:
            self.stop()

    def terminate(self, timeout_s: float = 60) -> int:
        """Send SIGTERM to the proxy (as Kubernetes does) and wait for it to exit; returns its exit code.

        Raises ``TimeoutError`` if it is still running after ``timeout_s`` (it is then killed).
        """
        process = self._process
        if process is None:
            raise RuntimeError("ProxyServer not started")
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.stop()
            raise TimeoutError(f"proxy still running {timeout_s}s after SIGTERM") from None
        self.stop()  # sweeps the group; the log stays readable
        return code

    def stop(self, timeout_s: float = 15) -> None:
        """Terminate the process group (SIGTERM, then SIGKILL); safe to call twice.

        The log stays readable until the object is garbage collected.
        """
        process, self._process = self._process, None
        _RUNNING.discard(self)
        if process is None:
            return
        for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            try:
                process.wait(wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        # The leader may be gone while children linger in its group: sweep it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)

    def __enter__(self) -> ProxyServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"ProxyServer(config_path={str(self.config_path)!r}, port={self.port}, pid={self.pid})"


@atexit.register
def _stop_all() -> None:
    for proxy in list(_RUNNING):
        proxy.stop()


class ProxyPool:
    """Proxies started once per configuration name, all stopped by :meth:`close`.

    Made for session fixtures: many tests ask for the proxy of a named config,
    the first one starts it, the rest reuse it. A start-up failure is kept and
    raised again for the same name instead of retrying.
    """

    def __init__(self, config_dir: str | os.PathLike[str]) -> None:
        self.config_dir = Path(config_dir)
        self._proxies: dict[str, tuple[str, ProxyServer]] = {}
        self._failures: dict[str, ProxyStartError] = {}

    def write_config(self, name: str, config: Mapping[str, Any]) -> Path:
        """Write ``<config_dir>/<name>.yaml``; returns its path."""
        return write_config(self.config_dir / f"{name}.yaml", config)

    def __call__(
        self,
        name: str,
        config: Mapping[str, Any],
        *,
        env: Mapping[str, str] | None = None,
        timeout_s: float = 120,
    ) -> ProxyServer:
        """The running proxy for ``name``, started from ``config`` on first use.

        Asking again for ``name`` with a different config or env is an error.
        """
        fingerprint = json.dumps([_plain(config), dict(env or {})], sort_keys=True, default=str)
        if name in self._failures:
            raise self._failures[name]
        if name in self._proxies:
            known, proxy = self._proxies[name]
            if known != fingerprint:
                raise ValueError(f"proxy config {name!r} was already started with different contents")
            return proxy
        proxy = ProxyServer(self.write_config(name, config), env=env)
        try:
            proxy.start(timeout_s)
        except ProxyStartError as exc:
            self._failures[name] = exc
            raise
        self._proxies[name] = (fingerprint, proxy)
        return proxy

    def close(self) -> None:
        """Stop every proxy this pool started."""
        proxies, self._proxies = self._proxies, {}
        for _, proxy in proxies.values():
            proxy.stop()


# -- config helpers ----------------------------------------------------------


def write_config(path: str | os.PathLike[str], config: Mapping[str, Any]) -> Path:
    """Write ``config`` as YAML (keys in the given order) to ``path``; returns the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(_plain(config), sort_keys=False))
    return target


def _plain(value: Any) -> Any:
    """Mappings and sequences as plain dicts and lists, so ``safe_dump`` takes them."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def mock_deployment(model_name: str, response: str = "mock reply", model: str = "openai/gpt-4o-mini") -> dict[str, Any]:
    """A deployment that answers ``response`` without a network (with a real price)."""
    return {"model_name": model_name, "litellm_params": {"model": model, "mock_response": response}}


def openai_deployment(
    model_name: str, api_base: str, model: str = "openai/gpt-4o-mini", **litellm_params: Any
) -> dict[str, Any]:
    """A deployment calling an OpenAI-compatible server, e.g. ``FakeProvider.base_url``."""
    params = {"model": model, "api_base": api_base, "api_key": "fake", **litellm_params}
    return {"model_name": model_name, "litellm_params": params}


def base_config(model_list: Sequence[Mapping[str, Any]], **litellm_settings: Any) -> dict[str, Any]:
    """A minimal proxy config: the deployments and test-friendly ``litellm_settings``."""
    settings = {"disable_add_user_agent_to_request_tags": True, **litellm_settings}
    return {"model_list": [dict(d) for d in model_list], "litellm_settings": settings}


def enable_costkit(
    config: Mapping[str, Any], costkit: Mapping[str, Any], callback: str = COSTKIT_CALLBACK
) -> dict[str, Any]:
    """A copy of ``config`` with the pack's callback and ``costkit:`` section added."""
    enabled = copy.deepcopy(dict(config))
    settings = enabled.setdefault("litellm_settings", {})
    callbacks = settings.get("callbacks") or []
    settings["callbacks"] = [*([callbacks] if isinstance(callbacks, str) else callbacks), callback]
    enabled["costkit"] = copy.deepcopy(dict(costkit))
    return enabled
