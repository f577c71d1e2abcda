"""Keep secrets out of messages and logs."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_NETLOC_PASSWORD = re.compile(r"(://[^:/@]*:)[^@/]*@")


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (for messages and logs)."""
    try:
        parts = urlsplit(url)
        password = parts.password
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # not a URL we can parse: mask by pattern
        return _NETLOC_PASSWORD.sub(r"\1***@", url)
    if password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host  # IPv6 literal
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))
