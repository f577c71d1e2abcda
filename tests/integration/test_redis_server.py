"""The test Redis launcher: flavours, verification, restart on the same port, cleanup."""

from __future__ import annotations

import socket

import pytest

from costkit_litellm.testing.redis_server import RedisServer, _Resp

pytestmark = pytest.mark.redis


def answers(port: int) -> bool:
    try:
        client = _Resp(port, timeout_s=0.5)
    except OSError:
        return False
    try:
        return bool(client.call("PING") == "PONG")
    finally:
        client.close()


class TestRedisServer:
    def test_search_server_has_search_and_json(self, redis_server):
        """The session server loads the search and JSON modules (start() proved KNN works)."""
        client = _Resp(redis_server.port)
        try:
            names = {entry[entry.index(b"name") + 1] for entry in client.call("MODULE", "LIST")}
        finally:
            client.close()
        assert {b"search", b"ReJSON"} <= names

    def test_cluster_server_serves_all_slots(self, redis_cluster_server):
        """The one-node cluster reports state ok with all 16384 slots assigned."""
        client = _Resp(redis_cluster_server.port)
        try:
            info = client.call("CLUSTER", "INFO")
        finally:
            client.close()
        assert b"cluster_state:ok" in info and b"cluster_slots_assigned:16384" in info

    def test_restart_keeps_the_port_and_stop_kills(self):
        """``restart()`` serves again on the same port; ``stop()`` leaves nothing listening."""
        server = RedisServer(search=False).start()
        port = server.port
        server.stop_server()
        assert not server.running and not answers(port)
        server.restart()
        assert server.port == port and answers(port)
        server.stop()
        server.stop()
        assert not answers(port)

    def test_taken_port_is_an_error_not_someone_elses_server(self, redis_server):
        """Asking for a port another server holds fails instead of silently using that server."""
        server = RedisServer(search=False, port=redis_server.port, startup_timeout_s=5)
        with pytest.raises(RuntimeError):
            server.start()
        assert not server.running
        with pytest.raises(RuntimeError):
            _ = server.unix_url  # the temp dir is gone too

    def test_context_manager_stops_on_exit(self):
        """Leaving the ``with`` block kills the server."""
        with RedisServer(search=False) as server:
            port = server.port
            assert answers(port)
        assert not answers(port)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # the port is free again
