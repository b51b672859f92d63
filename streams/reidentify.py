"""`fundwatch reidentify PSEUDONYM`: the privileged re-identification path.

Reads the pseudonym's `person_vault` row (the ClickHouse user needs the `fundwatch_reidentifier`
role on a server) and decrypts it with FUNDWATCH_REIDENTIFY_KEY. Prints the person id on stdout
and logs nothing about it.
"""

from __future__ import annotations

import argparse
import sys

from streams.config import Settings
from streams.privacy import PSEUDONYM_RE, VAULT_TABLE, PersonVault, VaultError

NO_KEY = (
    "FUNDWATCH_REIDENTIFY_KEY is not set: re-identification needs the vault key "
    "(the key the sink wrote the vault with)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "pseudonym", help="a person pseudonym as stored, e.g. p_0123456789abcdef01234567"
    )


def reidentify(settings: Settings, pseudonym: str) -> str:
    """The person id behind a pseudonym; VaultError when it cannot be recovered."""
    from streams.store.query import QueryError, run_query

    vault = PersonVault.from_settings(settings)
    if vault is None:
        raise VaultError(NO_KEY)
    if not PSEUDONYM_RE.match(pseudonym):
        raise VaultError(f"not a pseudonym: expected p_ and 24 hex digits, got {pseudonym!r}")
    sql = (
        f"SELECT ciphertext FROM `{settings.clickhouse_database}`.`{VAULT_TABLE}` FINAL "
        f"WHERE pseudonym = '{pseudonym}' LIMIT 1"
    )
    try:
        result = run_query(settings, sql)
    except QueryError as exc:
        raise VaultError(f"cannot read the vault: {exc}") from exc
    if not result.rows:
        raise VaultError(f"no vault entry for {pseudonym} (was the sink run with the key?)")
    return vault.open(pseudonym, result.rows[0][0])


def run_from_args(args: argparse.Namespace, settings: Settings) -> int:
    try:
        print(reidentify(settings, args.pseudonym))
    except VaultError as exc:
        print(f"fundwatch reidentify: {exc}", file=sys.stderr)
        return 1
    return 0
