"""Security: ClickHouse roles in the shipped DDL, the person vault and `fundwatch reidentify`,
no person id in logs, secrets masked by `fundwatch config`."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from streams.config import REPO_ROOT, Settings
from streams.privacy import PSEUDONYM_RE, PersonVault, Pseudonymizer, VaultError
from streams.sink.service import Sink
from streams.store.roles import (
    ANALYST_ROLE,
    REIDENTIFIER_ROLE,
    RESTRICTED_TABLES,
    ROLES,
    WRITER_ROLE,
    role_statements,
)
from streams.store.tables import TABLES, ddl_script
from tests.kafka_helpers import drain, encoded, produce
from tests.records import face_verify, settlement

INFRA = REPO_ROOT / "infra" / "clickhouse"


def _grants(statements: list[str], role: str) -> list[str]:
    return [s for s in statements if s.startswith("GRANT") and s.endswith(f"TO {role}")]


# --- roles ----------------------------------------------------------------------------------


@pytest.mark.parametrize("cluster", [None, "fundwatch_cluster"])
def test_shipped_ddl_creates_the_roles(cluster: str | None) -> None:
    text = (INFRA / ("cluster.sql" if cluster else "server.sql")).read_text()
    on = f" ON CLUSTER '{cluster}'" if cluster else ""
    for role in ROLES:
        assert f"CREATE ROLE IF NOT EXISTS {role}{on};" in text
    assert text == ddl_script("fundwatch", cluster)


@pytest.mark.parametrize("cluster", [None, "c1"])
def test_the_analyst_cannot_read_re_identifying_tables(cluster: str | None) -> None:
    statements = role_statements("fw", cluster)
    analyst = _grants(statements, ANALYST_ROLE)
    assert all(s.split()[-3].startswith("`fw`.") for s in analyst)
    assert all("INSERT" not in s and "ALTER" not in s for s in analyst)
    for table in RESTRICTED_TABLES:
        assert not [s for s in analyst if f"`{table}`" in s or f"`{table}_local`" in s]
    readable = {s.split("`")[3] for s in analyst}
    assert {t.name for t in TABLES} - RESTRICTED_TABLES <= readable
    assert {"region_daily", "person_timeline"} <= readable
    writer = _grants(statements, WRITER_ROLE)
    assert {t.name for t in TABLES} <= {s.split("`")[3] for s in writer if "INSERT" in s}
    assert not [s for s in writer if "SELECT" in s and "person_vault" in s]  # write-only vault
    privileged = {s.split("`")[3] for s in _grants(statements, REIDENTIFIER_ROLE)}
    assert privileged == set(RESTRICTED_TABLES) | (
        {f"{t}_local" for t in RESTRICTED_TABLES} if cluster else set()
    )


@pytest.mark.integration
@pytest.mark.parametrize("cluster", [None, "c1"])
def test_role_statements_parse_as_clickhouse_sql(store, cluster: str | None) -> None:
    """chDB has no access control (CREATE ROLE is refused: ACCESS_DENIED), so the statements
    are checked by ClickHouse's own parser (EXPLAIN AST) instead of being run."""
    for statement in role_statements(store.database, cluster):
        ast = store.client.command(f"EXPLAIN AST {statement}")
        kind = "CreateRoleQuery" if statement.startswith("CREATE ROLE") else "GrantQuery"
        assert kind in str(ast), (statement, ast)


# --- the person vault -----------------------------------------------------------------------


def test_vault_round_trip_and_tamper_checks() -> None:
    vault = PersonVault("a long secret")
    pseudo = Pseudonymizer(b"k", vault)
    p = pseudo.pseudonym("360102199001011234")
    assert PSEUDONYM_RE.match(p)
    [(table, (pseudonym, ciphertext, _sealed_at))] = pseudo.take_vault_rows()
    assert (table, pseudonym) == ("person_vault", p)
    assert "360102199001011234" not in ciphertext
    assert vault.open(p, ciphertext) == "360102199001011234"
    assert pseudo.pseudonym("360102199001011234") == p and not pseudo.take_vault_rows()
    with pytest.raises(VaultError, match="wrong key"):
        PersonVault("another secret").open(p, ciphertext)
    other = pseudo.pseudonym("360102199001019999")
    with pytest.raises(VaultError):  # a ciphertext moved onto another pseudonym
        vault.open(other, ciphertext)
    assert Pseudonymizer(b"k").take_vault_rows() == []
    assert PersonVault.from_settings(Settings(_env_file=None)) is None


def _people(n: int) -> list[dict]:
    import time

    t0 = int(time.time() * 1000) - 2 * 86_400_000
    return [settlement(event_id=f"SV{i:06d}", person_id=f"36010219900101{i:04d}",
                       event_time=t0 + i * 1000) for i in range(n)]  # fmt: skip


def _cli(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streams.cli", *argv], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


@pytest.mark.integration
def test_the_sink_fills_the_vault_only_with_the_key_and_reidentify_decrypts(
    isolated_settings: Settings,
    store,
    store_settings: Settings,
    _store_engine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from streams.store.owner import QueryServer

    people = _people(300)
    faces = [face_verify(event_id=f"FV{i:06d}", subject_id=p["person_id"])
             for i, p in enumerate(people[:50])]  # fmt: skip
    produce(isolated_settings, "settlement", encoded("SettlementEvent", people, "person_id"))
    produce(isolated_settings, "face_verify", encoded("FaceVerifyEvent", faces, "subject_id"))
    db = store.database
    roles = ("settlement", "face_verify", "dead_letters")

    with caplog.at_level(logging.DEBUG):
        drain(Sink(isolated_settings, store, roles=roles), isolated_settings, roles[:2])
        assert store.scalar(f"SELECT count() FROM `{db}`.person_vault") == 0  # no key, no vault

        keyed = isolated_settings.model_copy(update={"reidentify_key": SecretStr("vault-secret")})
        sink = Sink(keyed, store, roles=roles, group_id=f"{keyed.consumer_group}-keyed")
        drain(sink, keyed, roles[:2])
    assert store.scalar(f"SELECT count() FROM `{db}`.person_vault FINAL") == 300
    pseudonym = store.scalar(
        f"SELECT person_id FROM `{db}`.settlements FINAL WHERE event_id = 'SV000007'"
    )
    leaked = [p["person_id"] for p in people if p["person_id"] in caplog.text]
    assert not leaked, "person ids in the sink's log"

    # `fundwatch reidentify` through the store owner's query endpoint, like an operator would.
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUNDWATCH_")}
    env.update(FUNDWATCH_DATA_DIR=str(store_settings.data_dir), FUNDWATCH_CLICKHOUSE_DATABASE=db)
    # the owner's query session opens the engine's default database
    _store_engine.client.command(f"CREATE DATABASE IF NOT EXISTS `{_store_engine.database}`")
    server = QueryServer(_store_engine).start()
    try:
        no_key = _cli(env, "reidentify", pseudonym)
        assert no_key.returncode == 1 and "FUNDWATCH_REIDENTIFY_KEY is not set" in no_key.stderr
        assert "3601021990" not in no_key.stdout + no_key.stderr
        wrong = _cli({**env, "FUNDWATCH_REIDENTIFY_KEY": "not-the-key"}, "reidentify", pseudonym)
        assert wrong.returncode == 1 and "does not decrypt" in wrong.stderr
        ok = _cli({**env, "FUNDWATCH_REIDENTIFY_KEY": "vault-secret"}, "reidentify", pseudonym)
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.strip() == "360102199001010007"
        bad = _cli({**env, "FUNDWATCH_REIDENTIFY_KEY": "vault-secret"}, "reidentify", "x' OR 1")
        assert bad.returncode == 1 and "not a pseudonym" in bad.stderr
    finally:
        server.close()


# --- secrets --------------------------------------------------------------------------------

SECRETS = {
    "FUNDWATCH_KAFKA_SASL_PASSWORD": "sasl-pw-5f2e",
    "FUNDWATCH_KAFKA_SSL_KEY_PASSWORD": "ssl-key-pw-8a1c",
    "FUNDWATCH_PSEUDONYM_KEY": "pseudonym-key-3d9b",
    "FUNDWATCH_REIDENTIFY_KEY": "vault-key-77e0",
    "FUNDWATCH_CLICKHOUSE_URL": "https://fundwatch:ch-pw-41aa@clickhouse.example:8443/fundwatch",
    "FUNDWATCH_KAFKA_CLIENT_CONFIG": '{"sasl.oauthbearer.client.secret": "oauth-secret-9c3f"}',
}


def test_fundwatch_config_masks_every_secret(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUNDWATCH_")}
    env.update(SECRETS, FUNDWATCH_DATA_DIR=str(tmp_path),
               FUNDWATCH_KAFKA_BOOTSTRAP="kafka.example:9093",
               FUNDWATCH_KAFKA_SECURITY_PROTOCOL="SASL_SSL",
               FUNDWATCH_KAFKA_SASL_MECHANISM="SCRAM-SHA-512",
               FUNDWATCH_KAFKA_SASL_USERNAME="fundwatch",
               FUNDWATCH_KAFKA_SSL_CA_LOCATION="/etc/fundwatch/ca.pem")  # fmt: skip
    proc = _cli(env, "config")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    for secret in ("sasl-pw-5f2e", "ssl-key-pw-8a1c", "pseudonym-key-3d9b", "vault-key-77e0",
                   "ch-pw-41aa", "oauth-secret-9c3f"):  # fmt: skip
        assert secret not in out, secret
    shown = json.loads(proc.stdout)
    assert shown["kafka_security_protocol"] == "SASL_SSL"
    assert shown["kafka_sasl_username"] == "fundwatch"
    assert shown["kafka_ssl_ca_location"] == "/etc/fundwatch/ca.pem"
    for key in ("kafka_sasl_password", "kafka_ssl_key_password", "pseudonym_key",
                "reidentify_key"):  # fmt: skip
        assert shown[key] == "**********", key
    assert re.fullmatch(r"https://fundwatch:\*+@clickhouse\.example:8443/fundwatch",
                        shown["clickhouse_url"])  # fmt: skip

    # ... and the clients get the real values from the same settings.
    settings = Settings(_env_file=None, kafka_sasl_password="sasl-pw-5f2e",
                        kafka_security_protocol="SASL_SSL")  # fmt: skip
    assert settings.kafka_common()["sasl.password"] == "sasl-pw-5f2e"
    assert "sasl-pw-5f2e" not in repr(settings) and "sasl-pw-5f2e" not in str(settings)
