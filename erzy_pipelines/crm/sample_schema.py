"""The sample CRM's tables, kept apart so readers of the schema need not wade through the data.

Five tables a small business CRM plausibly has: companies, people, their phone numbers, CRM
groups and group memberships. MariaDB gets utf8mb4/InnoDB so the Unicode names fit.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

metadata = sa.MetaData()
_TABLE_OPTS: dict[str, Any] = {"mysql_charset": "utf8mb4", "mysql_engine": "InnoDB"}

companies = sa.Table(
    "companies",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("country", sa.String(2)),
    **_TABLE_OPTS,
)

people = sa.Table(
    "people",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("display_name", sa.String(300)),
    sa.Column("first_name", sa.String(120)),
    sa.Column("last_name", sa.String(120)),
    sa.Column("company_id", sa.Integer, sa.ForeignKey("companies.id"), index=True),
    sa.Column("email", sa.String(320)),
    sa.Column("notes", sa.Text),
    sa.Column("tags", sa.Text),
    sa.Column("country", sa.String(2)),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    **_TABLE_OPTS,
)

phone_numbers = sa.Table(
    "phone_numbers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("person_id", sa.Integer, sa.ForeignKey("people.id"), nullable=False, index=True),
    sa.Column("number", sa.String(80), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("is_primary", sa.SmallInteger, nullable=False, default=0),
    **_TABLE_OPTS,
)

crm_groups = sa.Table(
    "crm_groups",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("group_key", sa.String(100), nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("erzycall_group_id", sa.String(100)),
    **_TABLE_OPTS,
)

group_memberships = sa.Table(
    "group_memberships",
    metadata,
    sa.Column("person_id", sa.Integer, sa.ForeignKey("people.id"), primary_key=True),
    sa.Column("group_id", sa.Integer, sa.ForeignKey("crm_groups.id"), primary_key=True),
    sa.Index("ix_group_memberships_group_id", "group_id"),
    **_TABLE_OPTS,
)

DEMO_TABLES = ("companies", "people", "phone_numbers", "crm_groups", "group_memberships")
