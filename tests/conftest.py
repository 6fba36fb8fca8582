"""Shared pytest configuration: fixtures live in tests/plugins, one module per peer."""

pytest_plugins = [
    "tests.plugins.samples",
    "tests.plugins.redis_server",
    "tests.plugins.moto_server",
    "tests.plugins.cmq_server",
]
