"""The PostgreSQL driver path (hub/store/db.py `_on_asyncpg`) uses a few of
SQLAlchemy's asyncpg adapter internals; with a SQLAlchemy whose adapter lacks
them, every statement goes through SQLAlchemy's execution instead of failing."""

from __future__ import annotations

from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection
from sqlalchemy.engine import Connection

from hub.store.db import _driver_path_fits


def test_the_installed_sqlalchemy_has_what_the_driver_path_uses() -> None:
    assert _driver_path_fits(Connection, AsyncAdapt_asyncpg_connection)


def test_an_adapter_without_those_internals_is_left_to_sqlalchemy() -> None:
    class OtherAdapter:  # another SQLAlchemy version's adapter: none of the internals
        pass

    assert not _driver_path_fits(Connection, OtherAdapter)
    assert not _driver_path_fits(object, AsyncAdapt_asyncpg_connection)
