"""The costkit: section: typed, immutable, and every mistake named by file and key path."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from costkit_litellm.config import CostKitConfig, load_config, parse_config
from costkit_litellm.errors import ConfigError


class TestDefaults:
    def test_missing_section_gives_defaults(self) -> None:
        """No costkit: section means defaults: in-process state, headers and metrics on."""
        config = parse_config(None)
        assert config == CostKitConfig()
        assert config.redis_url is None
        assert config.headers.enabled and config.metrics.enabled

    def test_file_without_section_loads(self, tmp_path: Path) -> None:
        """A proxy config with no costkit: key loads with defaults."""
        path = tmp_path / "proxy.yaml"
        path.write_text("model_list: []\n")
        assert load_config(path) == CostKitConfig()

    def test_config_is_immutable(self) -> None:
        """Parsed config objects cannot be changed after start-up."""
        config = parse_config({"metrics": {"tag_labels": ["feature"]}})
        with pytest.raises(ValidationError):
            config.metrics.max_label_values = 3  # type: ignore[misc]
        assert config.metrics.tag_labels == ("feature",)


class TestErrorsNameTheKey:
    def test_unknown_key_is_named_with_file_and_path(self) -> None:
        """An unknown nested key fails naming the file and the full key path."""
        with pytest.raises(ConfigError) as info:
            parse_config({"metrics": {"tag_label": ["feature"]}}, "proxy_config.yaml")
        assert str(info.value) == (
            "proxy_config.yaml: costkit.metrics.tag_label: is not a known key; did you mean tag_labels?"
        )

    def test_typo_suggests_the_key_meant(self) -> None:
        """A misspelt key (loop_treshold) is reported with the key it most likely meant."""
        with pytest.raises(ConfigError) as info:
            parse_config({"breaker": {"loop_treshold": 3}}, "p.yaml")
        assert info.value.problems == [
            "costkit.breaker.loop_treshold: is not a known key; did you mean loop_threshold?"
        ]

    def test_unknown_key_without_a_close_match_lists_the_known_keys(self) -> None:
        """A key like no known one lists the keys known at that level, inside lists and maps too."""
        with pytest.raises(ConfigError) as info:
            parse_config({"pricing": {"models": {"m": {"cost": 1}}}}, "p.yaml")
        assert info.value.problems == [
            "costkit.pricing.models.m.cost: is not a known key (known here: input_usd_per_million_tokens, "
            "max_output_tokens, output_usd_per_million_tokens)"
        ]
        with pytest.raises(ConfigError) as info:
            parse_config({"budgets": [{"name": "b", "scope": "user", "limit_usd": 1, "windw": "day"}]}, "p.yaml")
        assert info.value.problems == ["costkit.budgets[0] (b).windw: is not a known key; did you mean window?"]


class TestCacheRedis:
    def test_cache_url_defaults_to_the_store_url(self) -> None:
        """Without cache.redis_url the cache uses costkit.redis_url; with it, its own."""
        assert parse_config({"redis_url": "redis://a:6379"}).cache_url() == "redis://a:6379"
        config = parse_config({"redis_url": "redis://a:6379", "cache": {"redis_url": "redis://b:6379"}})
        assert config.cache_url() == "redis://b:6379"

    def test_cluster_with_redis_cache_needs_its_own_url(self) -> None:
        """Budgets on a Redis Cluster with the cache on need cache.redis_url (search does not span a cluster)."""
        with pytest.raises(ConfigError, match=r"cache.redis_url: needed with redis_cluster: true"):
            parse_config({"redis_url": "redis://a:7000", "redis_cluster": True, "cache": {"enabled": True}})
        parse_config(
            {
                "redis_url": "redis://a:7000",
                "redis_cluster": True,
                "cache": {"enabled": True, "redis_url": "redis://search:6379"},
            }
        )

    def test_cache_url_must_be_a_redis_url(self) -> None:
        """cache.redis_url takes only redis://, rediss:// or unix:// URLs, masking a password in the error."""
        with pytest.raises(ConfigError, match=r"costkit.cache.redis_url: 'http://u:\*\*\*@h' is not a Redis URL"):
            parse_config({"cache": {"redis_url": "http://u:pw@h"}})

    def test_wrong_type_names_key_and_value(self) -> None:
        """A wrong type names the key and quotes the offending value."""
        with pytest.raises(ConfigError) as info:
            parse_config({"pricing": {"default_max_output_tokens": "lots"}}, "f.yaml")
        message = str(info.value)
        assert "costkit.pricing.default_max_output_tokens" in message and "'lots'" in message

    def test_impossible_value_in_a_map_entry(self) -> None:
        """A negative price inside a per-model override is refused with its path."""
        with pytest.raises(ConfigError) as info:
            parse_config({"pricing": {"models": {"local-llama": {"input_usd_per_million_tokens": -1}}}})
        assert "costkit.pricing.models.local-llama.input_usd_per_million_tokens" in str(info.value)

    def test_all_problems_reported_at_once(self) -> None:
        """Several mistakes are listed together, so one start-up shows them all."""
        with pytest.raises(ConfigError) as info:
            parse_config({"bogus": 1, "metrics": {"max_label_values": 0, "tag_labels": ["model"]}})
        assert len(info.value.problems) == 3
        assert "costkit.metrics.tag_labels: " in str(info.value)

    def test_invalid_label_name(self) -> None:
        """A tag label that is not a valid Prometheus label name is refused."""
        with pytest.raises(ConfigError, match="not a valid Prometheus label name"):
            parse_config({"metrics": {"tag_labels": ["feature-name"]}})

    def test_non_redis_url_is_refused_with_password_masked(self) -> None:
        """A redis_url of another scheme fails, and the password never appears in the message."""
        with pytest.raises(ConfigError) as info:
            parse_config({"redis_url": "http://user:hunter2@host:6379"})
        assert "hunter2" not in str(info.value)
        assert "costkit.redis_url" in str(info.value)

    def test_section_must_be_a_mapping(self) -> None:
        """costkit: holding a list is a clear error."""
        with pytest.raises(ConfigError, match=r"costkit: must be a mapping"):
            parse_config(["redis_url"], "f.yaml")  # type: ignore[arg-type]

    def test_bad_yaml_names_the_file(self, tmp_path: Path) -> None:
        """Unparseable YAML fails naming the file."""
        path = tmp_path / "broken.yaml"
        path.write_text("costkit: [unclosed\n")
        with pytest.raises(ConfigError, match=r"broken\.yaml: not valid YAML"):
            load_config(path)

    def test_missing_file_names_the_file(self, tmp_path: Path) -> None:
        """A config path that does not exist fails naming it."""
        with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read"):
            load_config(tmp_path / "nope.yaml")


class TestEnvironmentReferences:
    def test_reference_is_resolved(self) -> None:
        """os.environ/NAME takes the variable's value."""
        config = parse_config({"redis_url": "os.environ/REDIS_URL"}, env={"REDIS_URL": "redis://h:6379/0"})
        assert config.redis_url == "redis://h:6379/0"

    def test_missing_variable_is_a_clear_error(self) -> None:
        """A referenced variable that is not set fails naming the key and the variable."""
        with pytest.raises(ConfigError) as info:
            parse_config({"redis_url": "os.environ/REDIS_URL"}, "p.yaml", env={})
        assert "costkit.redis_url: environment variable REDIS_URL is not set" in str(info.value)

    def test_optional_reference_falls_back(self) -> None:
        """os.environ/NAME:- makes a variable optional; os.environ/NAME:-x gives a default."""
        assert parse_config({"redis_url": "os.environ/REDIS_URL:-"}, env={}).redis_url is None
        config = parse_config({"key_prefix": "os.environ/PREFIX:-shared"}, env={})
        assert config.key_prefix == "shared"

    def test_references_inside_lists_are_resolved(self) -> None:
        """References work at any depth, lists included."""
        config = parse_config({"metrics": {"tag_labels": ["os.environ/LABEL"]}}, env={"LABEL": "feature"})
        assert config.metrics.tag_labels == ("feature",)


class TestShippedConfig:
    def test_shipped_proxy_config_is_valid(self) -> None:
        """The proxy_config.yaml in the repository validates (without REDIS_URL)."""
        path = Path(__file__).resolve().parents[2] / "proxy_config.yaml"
        config = load_config(path, env={})
        assert config.redis_url is None
        assert "feature" in config.metrics.tag_labels
