"""The only package that imports litellm: hooks, price lookups and the application-code API.

Proxy: name ``costkit_litellm.litellm_adapter.proxy.costkit_callback`` in
``litellm_settings.callbacks``. Application code::

    kit = CostKit.from_yaml("proxy_config.yaml")
    install(kit, router)          # or install(kit) for plain litellm.acompletion via kit_acompletion
"""

from costkit_litellm.litellm_adapter.app import install, kit_acompletion, uninstall
from costkit_litellm.litellm_adapter.callback import CostKitCallback

__all__ = ["CostKitCallback", "install", "kit_acompletion", "uninstall"]
