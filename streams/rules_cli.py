"""`fundwatch rules`: list, show and validate the rule configurations (models/rules/configs)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

from streams.config import Settings

if TYPE_CHECKING:
    from models.detector import Params
    from models.rules.config import RuleConfig

DESCRIPTION = """\
Every detector's parameters (thresholds, windows, severity, kind, enabled) live in versioned
TOML files under models/rules/configs/ (format: docs/detection.md, "Rule library"). A worker
runs the configuration named by FUNDWATCH_RULES_CONFIG (default: default), and every alert
records it as config_version = <name>@<version>."""

EPILOG = """\
examples:
  fundwatch rules list                           the active configuration
  fundwatch rules list --config candidate        another one
  fundwatch rules show cross_institution_frequency
  fundwatch rules validate models/rules/configs/candidate.toml"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.epilog = EPILOG
    sub = parser.add_subparsers(dest="rules_action", metavar="ACTION", required=True)
    config_help = (
        "configuration name (models/rules/configs/NAME.toml) or a path to a TOML file "
        "(default: FUNDWATCH_RULES_CONFIG, else 'default')"
    )
    fmt = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser(
        "list",
        help="one line per detector: kind, severity, enabled, key thresholds",
        description="One line per detector of a configuration: id, kind, severity, enabled "
        "and the thresholds that decide whether it fires (state bounds left out).",
        formatter_class=fmt,
    )
    p.add_argument("--config", "-c", default=None, help=config_help)

    p = sub.add_parser(
        "show",
        help="every parameter of one detector, with its value and meaning",
        description="Every parameter of one detector in a configuration: its value, the "
        "detector's default when it differs, and what it means.",
        formatter_class=fmt,
    )
    p.add_argument("detector_id", metavar="ID", help="detector id, e.g. card_burst")
    p.add_argument("--config", "-c", default=None, help=config_help)

    p = sub.add_parser(
        "validate",
        help="check configuration files: exit 0 and 'ok', or exit 1 and every problem",
        description="Load and validate configuration files (with what they extend). Prints "
        "'<file>: ok (<name>@<version>)' per valid file, or one line per problem naming the "
        "file, the detector and the field; the exit status is 1 if any file is invalid.",
        formatter_class=fmt,
    )
    p.add_argument("files", metavar="FILE", nargs="+", type=Path, help="a configuration file")


def run_from_args(args: argparse.Namespace, settings: Settings) -> int:
    from models.rules.config import RuleConfigError, load_rule_config

    if args.rules_action == "validate":
        return _validate(args.files)
    try:
        config = load_rule_config(args.config or settings.rules_config)
    except RuleConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    if args.rules_action == "list":
        _list(config)
        return 0
    return _show(config, args.detector_id)


def _validate(files: list[Path]) -> int:
    from models.rules.config import RuleConfigError, load_rule_config

    status = 0
    for path in files:
        try:
            config = load_rule_config(path)
        except RuleConfigError as exc:
            print(exc, file=sys.stderr)
            status = 1
        else:
            print(f"{path}: ok ({config.label})")
    return status


def _severity(params: Params) -> str:
    """The fixed severity levels, or the ratio steps of a graded severity."""
    fixed = [
        str(getattr(params, f.name))
        for f in fields(params)
        if f.name.startswith("severity_") and f.name != "severity_steps"
    ]
    if fixed:
        return "/".join(fixed)
    s2, s3 = params.severity_steps
    return f"graded x{s2:g}/x{s3:g}"


def _thresholds(params: Params) -> str:
    from models.rules.config import BOUND_FIELDS, to_toml_value

    parts = []
    for f in fields(params):
        if f.name in BOUND_FIELDS or f.name.startswith("severity_"):
            continue
        value = getattr(params, f.name)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        parts.append(f"{f.name}={to_toml_value(value)}")
    return " ".join(parts)


def _list(config: RuleConfig) -> None:
    header = f"rule configuration {config.label} ({_rel(config.path)})"
    if config.extends:
        header += f", extends {' -> '.join(config.extends)}"
    print(header)
    if config.description:
        print(config.description)
    rows = [("DETECTOR", "KIND", "SEVERITY", "ENABLED", "THRESHOLDS")]
    for did, rule in config.rules.items():
        rows.append(
            (
                did,
                rule.kind,
                _severity(rule.params),
                "yes" if rule.enabled else "no",
                _thresholds(rule.params),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        cells = [c.ljust(w) for c, w in zip(row[:4], widths, strict=True)]
        print("  ".join([*cells, row[4]]).rstrip())
    n = len(config.enabled_ids)
    print(f"{n} of {len(config.rules)} detectors enabled")


def _show(config: RuleConfig, detector_id: str) -> int:
    from models.catalogue import BY_ID
    from models.rules.config import default_settings, field_docs, to_toml_value

    rule = config.rules.get(detector_id)
    if rule is None:
        print(
            f"fundwatch rules: unknown detector id {detector_id!r} "
            f"(known: {', '.join(config.rules)})",
            file=sys.stderr,
        )
        return 1
    default = default_settings()[detector_id]
    scenario = BY_ID[detector_id]
    docs = field_docs(type(rule.params))
    print(f"[{detector_id}] {scenario.name_zh}: {scenario.signal}")
    print(f"configuration {config.label} ({_rel(config.path)})")
    entries: list[tuple[str, object, object]] = [
        ("enabled", rule.enabled, default.enabled),
        ("kind", rule.kind, default.kind),
    ]
    names = [f.name for f in fields(rule.params) if f.name != "severity_steps"]
    entries += [
        (name, getattr(rule.params, name), getattr(default.params, name))
        for name in [*names, "severity_steps"]
    ]
    if rule.packages_version is not None:
        entries.append(("packages_version", rule.packages_version, rule.packages_version))
    for name, value, dflt in entries:
        shown = "(library default)" if value is None else to_toml_value(value)
        line = f"{name} = {shown}"
        if value != dflt:
            line += f"    (default {to_toml_value(dflt)})"
        print(line)
        if docs.get(name):
            print(f"    {docs[name]}")
    return 0


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
