"""Secrets never reach messages and logs: every credential form redis-py accepts in a URL is masked."""

from __future__ import annotations

import pytest

from costkit_litellm.redact import mask_url


class TestMaskUrl:
    @pytest.mark.parametrize(
        ("url", "masked"),
        [
            ("redis://host/0?password=s3cret", "redis://host/0?password=***"),
            (
                "redis://host:6379/0?username=bob&password=s3cret&db=2",
                "redis://host:6379/0?username=bob&password=***&db=2",
            ),
            ("rediss://:pw@host/0?ssl_password=s3cret", "rediss://:***@host/0?ssl_password=***"),
            ("redis://host/0?Password=a%26b", "redis://host/0?Password=***"),
            ("unix:///tmp/redis.sock?password=s3cret&db=1", "unix:///tmp/redis.sock?password=***&db=1"),
            ("redis://[broken?password=s3cret", "redis://[broken?password=***"),
        ],
    )
    def test_query_passwords_are_masked(self, url: str, masked: str) -> None:
        """A query-string password (redis-py takes ?password=) is masked like the user info one (issue 9 item 7)."""
        assert mask_url(url) == masked
        assert "s3cret" not in mask_url(url)

    @pytest.mark.parametrize(
        "url", ["redis://host:6379", "redis://host/0?db=2&socket_timeout=5", "redis://user@host/0", "not a url"]
    )
    def test_urls_without_secrets_are_unchanged(self, url: str) -> None:
        """A URL without a password comes back exactly as it was."""
        assert mask_url(url) == url
