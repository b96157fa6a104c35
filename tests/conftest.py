import pytest

from planner.catalog import Catalog


@pytest.fixture(scope="session")
def catalog():
    return Catalog()
