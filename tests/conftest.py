"""Shared fixtures. Each area keeps its fixtures in its own plugin module."""
pytest_plugins = [
    "tests.plugins.log_fixtures",
    "tests.plugins.model_fixtures",
    "tests.plugins.search_fixtures",
    "tests.plugins.llm_fixtures",
    "tests.plugins.ray_fixtures",
]
