"""costkit-litellm: cost management for the LiteLLM proxy and Router.

Tiered routing, safe semantic caching, hard dollar budgets and FinOps accounting, as an extension
pack. This package does not import litellm at import time: ``CostKit`` and the pure modules work
without it; the LiteLLM glue lives in ``costkit_litellm.litellm_adapter``.
"""

from costkit_litellm.config import CostKitConfig, load_config, parse_config
from costkit_litellm.errors import BadRequestMetadata, ConfigError, CostKitError, RequestRejected
from costkit_litellm.kit import CostKit

__version__ = "0.1.0"

__all__ = [
    "BadRequestMetadata",
    "ConfigError",
    "CostKit",
    "CostKitConfig",
    "CostKitError",
    "RequestRejected",
    "__version__",
    "load_config",
    "parse_config",
]
