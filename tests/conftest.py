from __future__ import annotations

import pytest

from tests.fixtures import FIXTURES


def pytest_configure(config: pytest.Config) -> None:
    if not FIXTURES.is_dir():
        raise pytest.UsageError(
            f"vLLM fixtures not found at {FIXTURES}; they are part of the checkout"
        )
