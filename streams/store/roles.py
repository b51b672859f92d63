"""ClickHouse roles shipped with the DDL of a server or a cluster (`fundwatch store ddl`).

- `fundwatch_analyst`: SELECT on the analyst tables and views, nothing that can re-identify a
  person: not `dead_letters` (raw record bytes, person ids included) nor `person_vault`.
- `fundwatch_writer`: INSERT on every table and SELECT on the analyst tables (the sink writes
  the vault but cannot read it back).
- `fundwatch_reidentifier`: SELECT on `person_vault` and `dead_letters`, for the privileged
  re-identification path (`fundwatch reidentify`, which also needs FUNDWATCH_REIDENTIFY_KEY).

Grant the roles to users (`GRANT fundwatch_analyst TO alice`). On a cluster the grants cover the
Distributed tables and their `<table>_local` tables. The embedded chDB store has no access
control (it refuses CREATE ROLE), so these statements are not part of `Store.ensure_schema`.
"""

from __future__ import annotations

from streams.store.tables import TABLES, VIEWS

ANALYST_ROLE = "fundwatch_analyst"
WRITER_ROLE = "fundwatch_writer"
REIDENTIFIER_ROLE = "fundwatch_reidentifier"
ROLES = (ANALYST_ROLE, WRITER_ROLE, REIDENTIFIER_ROLE)
# tables holding data that can re-identify a person: privileged role only
RESTRICTED_TABLES = frozenset({"dead_letters", "person_vault"})


def analyst_objects() -> list[str]:
    """Tables and views the analyst role may read."""
    return [t.name for t in TABLES if t.name not in RESTRICTED_TABLES] + [v.name for v in VIEWS]


def role_statements(database: str, cluster: str | None = None) -> list[str]:
    """CREATE ROLE and GRANT statements for the three roles."""
    on_cluster = f" ON CLUSTER '{cluster}'" if cluster else ""

    def objects(names: list[str], local: bool) -> list[str]:
        out = [f"`{database}`.`{name}`" for name in names]
        if cluster and local:
            out += [f"`{database}`.`{name}_local`" for name in names]
        return out

    def grant(privileges: str, names: list[str], role: str, local: bool = True) -> list[str]:
        return [
            f"GRANT{on_cluster} {privileges} ON {obj} TO {role}" for obj in objects(names, local)
        ]

    statements = [f"CREATE ROLE IF NOT EXISTS {role}{on_cluster}" for role in ROLES]
    tables = [t.name for t in TABLES]
    analyst_tables = [name for name in tables if name not in RESTRICTED_TABLES]
    statements += grant("SELECT", analyst_tables, ANALYST_ROLE)
    statements += grant("SELECT", [v.name for v in VIEWS], ANALYST_ROLE, local=False)
    statements += grant("INSERT", tables, WRITER_ROLE)
    statements += grant("SELECT", analyst_tables, WRITER_ROLE)
    statements += grant("SELECT", sorted(RESTRICTED_TABLES), REIDENTIFIER_ROLE)
    return statements
