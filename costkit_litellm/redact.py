"""Keep secrets out of messages and logs."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_NETLOC_PASSWORD = re.compile(r"(://[^:/@]*:)[^@/]*@")
_SECRET_NAME = re.compile(r"pass|pwd|secret|token|auth|credential|key", re.I)
"""Query parameters masked: redis-py takes ``?password=...`` (and any other key) as a connection argument."""
_QUERY_SECRET = re.compile(r"(?i)([?&;][^=&;#]*(?:pass|pwd|secret|token|auth|credential|key)[^=&;#]*=)[^&;#]*")
MASK = "***"


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***``: in the user info and in secret-named query parameters
    (``password``, ``ssl_password``, ``token``...), the forms redis-py accepts (for messages and logs)."""
    try:
        parts = urlsplit(url)
        password = parts.password
        port = f":{parts.port}" if parts.port else ""
        query = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:  # not a URL we can parse: mask by pattern
        return _QUERY_SECRET.sub(rf"\1{MASK}", _NETLOC_PASSWORD.sub(rf"\1{MASK}@", url))
    if password is not None:
        user = parts.username or ""
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host  # IPv6 literal
        parts = parts._replace(netloc=f"{user}:{MASK}@{host}{port}")
    if any(_SECRET_NAME.search(name) for name, _ in query):
        masked = [(name, MASK if _SECRET_NAME.search(name) else value) for name, value in query]
        parts = parts._replace(query=urlencode(masked, safe="*"))
    if password is None and parts.query == urlsplit(url).query:
        return url
    joined = urlunsplit(parts)
    if "://" in url and "://" not in joined:  # unix:///path: keep the empty authority urlunsplit drops
        joined = joined.replace(":", "://", 1)
    return joined
