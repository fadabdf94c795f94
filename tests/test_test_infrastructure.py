"""The suite really talks to the databases it claims to test against.

Under QUERYLENS_REQUIRE_SERVICES=1 (.ci/run) these run unconditionally, so a
CI run cannot pass while PostgreSQL, MariaDB or Redis is silently absent.
"""

from __future__ import annotations

import os

import pytest
from django.conf import settings
from django.core.cache import caches
from django.db import connection, connections

VENDOR_FOR = {"sqlite": "sqlite", "postgres": "postgresql", "mariadb": "mysql"}


@pytest.mark.django_db
def test_default_alias_follows_querylens_test_database() -> None:
    wanted = os.environ.get("QUERYLENS_TEST_DATABASE", "sqlite")
    assert connection.vendor == VENDOR_FOR[wanted]


@pytest.mark.postgres
@pytest.mark.django_db(databases=["postgres"])
def test_postgres_alias_uses_the_throwaway_test_database() -> None:
    with connections["postgres"].cursor() as cursor:
        cursor.execute("SELECT current_database()")
        (name,) = cursor.fetchone()
    assert connections["postgres"].vendor == "postgresql"
    assert name == settings.DATABASES["postgres"]["TEST"]["NAME"]


@pytest.mark.mariadb
@pytest.mark.django_db(databases=["mariadb"])
def test_mariadb_alias_uses_the_throwaway_test_database() -> None:
    with connections["mariadb"].cursor() as cursor:
        cursor.execute("SELECT DATABASE()")
        (name,) = cursor.fetchone()
    assert connections["mariadb"].mysql_is_mariadb
    assert name == settings.DATABASES["mariadb"]["TEST"]["NAME"]


@pytest.mark.redis
def test_redis_cache_alias_round_trips_a_value() -> None:
    cache = caches["redis"]
    cache.set("infrastructure-probe", {"queries": 3}, timeout=30)
    try:
        assert cache.get("infrastructure-probe") == {"queries": 3}
    finally:
        cache.delete("infrastructure-probe")
