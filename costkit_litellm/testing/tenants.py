"""Tenants for proxy tests without a database: a LiteLLM ``custom_auth`` module that maps test keys to
identities (key hash, user, team), written beside the proxy's config."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

MODULE = "costkit_test_tenants"

_SOURCE = '''"""Test tenants for a proxy without a database (written by costkit_litellm.testing.tenants)."""
import json

from litellm.proxy._types import UserAPIKeyAuth

TENANTS = json.loads(%r)


async def user_api_key_auth(request, api_key):
    fields = TENANTS.get(api_key)
    if fields is None:  # the master key, or any other: an admin without a team
        return UserAPIKeyAuth(api_key=api_key, user_role="proxy_admin")
    return UserAPIKeyAuth(**fields)
'''


def write_custom_auth(config_dir: Path, tenants: Mapping[str, Mapping[str, str]]) -> str:
    """Write the module into ``config_dir`` (the proxy imports it from beside its config) and return the
    ``general_settings.custom_auth`` value. ``tenants``: bearer key -> ``UserAPIKeyAuth`` fields
    (``api_key``: the key hash the proxy reports, ``user_id``, ``team_id``); any other key is an admin
    without a team. LiteLLM wants a ``UserAPIKeyAuth`` back: with a dict, ``litellm_enterprise`` goes on
    to the database check, which answers 400 without a database."""
    (config_dir / f"{MODULE}.py").write_text(_SOURCE % json.dumps(tenants, sort_keys=True), encoding="utf-8")
    return f"{MODULE}.user_api_key_auth"
