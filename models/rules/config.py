"""Named, versioned rule configurations: every detector's parameters as data.

A configuration is a TOML file `models/rules/configs/<name>.toml`::

    version = "2026.12.1"            # required; bump it on every change
    description = "..."              # optional
    extends = "default"              # optional: start from another configuration

    [cross_institution_frequency]    # one table per detector id (models/catalogue.py)
    enabled = true                   # false: the detector is not built
    kind = "suspicious"              # violation | suspicious (default: the catalogue's)
    window_hours = 24.0              # every other key is a field of the detector's Params
    max_institutions = 5

Without `extends`, whatever a file leaves out takes the detector's dataclass default; with it,
the parent's value (chains are allowed, cycles are an error). `version` and `description` are
never inherited. `extends` names a configuration in the same directory, else in
`models/rules/configs/`. Relative paths (`packages_path`) are relative to the file.

Loading validates everything and reports every problem at once as a `RuleConfigError`, one line
per problem naming the file, the detector and the field::

    models/rules/configs/strict.toml: [cross_institution_frequency] max_institutions: expected
    int >= 1, got -2

Detectors built from a configuration stamp `<name>@<version>` (its `label`) on their alerts as
`config_version`, so every alert says which configuration raised it.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import json
import re
import textwrap
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from functools import cache
from pathlib import Path
from typing import Any

from models.catalogue import BY_ID
from models.detector import BaseDetector, Detector, Params
from models.reference import Registry

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
"""Where named configurations live."""

DEFAULT_CONFIG = "default"

META_FIELDS = ("enabled", "kind")
"""Keys of a detector table that are not Params fields."""

KINDS = ("violation", "suspicious")

VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]*$")

ENUMS: dict[str, tuple[str, ...]] = {
    "visit_types": ("OUTPATIENT", "INPATIENT", "PHARMACY"),
    "purposes": ("VISIT", "ADMISSION", "BEDSIDE", "SETTLEMENT", "CLOCK_IN", "CLOCK_OUT"),
    "subject_types": ("DOCTOR", "PHARMACIST"),
}
"""Allowed items of the string-list parameters (the Avro enum symbols they are compared to)."""

BOUND_FIELDS = frozenset(
    {
        "max_events",
        "max_checks",
        "max_scans",
        "max_history",
        "max_stays",
        "max_elsewhere",
        "max_evidence",
        "max_stay_days",
        "memory_hours",
        "retention_days",
        "severity_steps",
        "packages_path",
    }
)
"""Parameters that bound state or tune severity rather than decide whether a rule fires."""

META_DOCS = {
    "enabled": "Build this detector (false: it is switched off in this configuration).",
    "kind": "violation (明确违规, raised automatically) or suspicious (可疑, for review).",
    "packages_version": "Version of the package library (packages.toml) this configuration "
    "was written for; loading fails if the library has another version.",
    "severity_steps": "Ratio observed/threshold from which severity is 2, then 3 "
    "(like the warning lines +50 % / +100 %).",
}

_BAD = object()


class RuleConfigError(ValueError):
    """A configuration that cannot be used; `errors` holds one message per problem."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


@dataclass(frozen=True)
class RuleSettings:
    """One detector's resolved settings in a configuration."""

    detector_id: str
    enabled: bool
    kind: str
    params: Params
    packages_version: str | None = None


@dataclass(frozen=True)
class RuleConfig:
    """A loaded, validated configuration: every detector's settings, in catalogue order."""

    name: str
    version: str
    path: Path
    rules: dict[str, RuleSettings]
    description: str = ""
    extends: tuple[str, ...] = ()
    """The chain of parents, nearest first."""

    @property
    def label(self) -> str:
        """`<name>@<version>`: what alerts record as `config_version`."""
        return f"{self.name}@{self.version}"

    @property
    def enabled_ids(self) -> list[str]:
        return [i for i, r in self.rules.items() if r.enabled]

    def build(self, registry: Registry | None = None) -> list[Detector]:
        """The enabled detectors, in catalogue order, stamped with this configuration's label."""
        registry = registry if registry is not None else Registry()
        out: list[Detector] = []
        for cls in detector_classes():
            rule = self.rules[cls.id]
            if not rule.enabled:
                continue
            det = cls.create(registry, rule.params)
            det.kind = rule.kind
            det.config_version = self.label
            out.append(det)
        return out


@cache
def detector_classes() -> tuple[type[BaseDetector], ...]:
    """The rule detector classes (imported lazily: detectors import models.detector)."""
    from models.detectors import DETECTOR_CLASSES

    return tuple(DETECTOR_CLASSES)


def _classes_by_id() -> dict[str, type[BaseDetector]]:
    return {cls.id: cls for cls in detector_classes()}


def available_configs(directory: Path = CONFIG_DIR) -> list[str]:
    """Names of the configurations in a directory."""
    return sorted(p.stem for p in directory.glob("*.toml"))


def config_path(name_or_path: str | Path) -> Path:
    """A configuration name (`default`) or a path to a TOML file."""
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or text.endswith(".toml") or "/" in text:
        return Path(name_or_path)
    return CONFIG_DIR / f"{text}.toml"


def load_rule_config(name_or_path: str | Path = DEFAULT_CONFIG) -> RuleConfig:
    """Load and validate a configuration by name or path; raises `RuleConfigError`."""
    path = config_path(name_or_path)
    if not path.is_file():
        hint = ", ".join(available_configs()) or "none"
        raise RuleConfigError(
            [f"{_show_path(path)}: no such rule configuration (available: {hint})"]
        )
    return _load(path.resolve(), ())


def validate_file(path: str | Path) -> list[str]:
    """Every problem of a configuration file (empty: it is valid)."""
    try:
        load_rule_config(Path(path))
    except RuleConfigError as exc:
        return exc.errors
    return []


def default_settings() -> dict[str, RuleSettings]:
    """What a configuration without any table means: the detectors' own defaults."""
    return {
        cls.id: RuleSettings(cls.id, True, BY_ID[cls.id].kind, cls.params_class())
        for cls in detector_classes()
    }


# --- loading -------------------------------------------------------------------------------


def _load(path: Path, chain: tuple[Path, ...]) -> RuleConfig:
    where = _show_path(path)
    if path in chain:
        cycle = " -> ".join(p.stem for p in (*chain, path))
        raise RuleConfigError([f"{where}: extends: cycle {cycle}"])
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise RuleConfigError([f"{where}: invalid TOML: {exc}"]) from None
    except OSError as exc:
        raise RuleConfigError([f"{where}: cannot read: {exc.strerror or exc}"]) from None

    errors: list[str] = []
    version = data.get("version")
    if version is None:
        errors.append(f'{where}: version: required (e.g. version = "2026.12.1")')
    elif not isinstance(version, str) or not VERSION_RE.match(version):
        errors.append(
            f"{where}: version: expected a string of letters, digits and . + _ -, "
            f"got {_toml(version)}"
        )
    description = data.get("description", "")
    if not isinstance(description, str):
        errors.append(f"{where}: description: expected a string, got {_toml(description)}")
    extends = data.get("extends")
    if extends is not None and (not isinstance(extends, str) or not extends):
        errors.append(f"{where}: extends: expected a configuration name, got {_toml(extends)}")
        extends = None

    classes = _classes_by_id()
    overrides: dict[str, dict[str, Any]] = {}
    for key, value in data.items():
        if key in ("version", "description", "extends"):
            continue
        if not isinstance(value, dict):
            errors.append(
                f"{where}: {key}: unknown key{_suggest(key, ['version', 'description', 'extends'])}"
            )
            continue
        cls = classes.get(key)
        if cls is None:
            errors.append(f"{where}: [{key}]: unknown detector id{_suggest(key, list(classes))}")
            continue
        overrides[key] = _check_table(where, path.parent, cls, value, errors)

    parent: RuleConfig | None = None
    if extends is not None:
        parent_path = path.parent / f"{extends}.toml"
        if not parent_path.is_file():
            parent_path = CONFIG_DIR / f"{extends}.toml"
        if not parent_path.is_file():
            hint = ", ".join(available_configs(path.parent) or available_configs())
            errors.append(f"{where}: extends: no configuration {extends!r} (available: {hint})")
        else:
            try:
                parent = _load(parent_path.resolve(), (*chain, path))
            except RuleConfigError as exc:
                errors.extend(exc.errors)

    base = parent.rules if parent is not None else default_settings()
    rules: dict[str, RuleSettings] = {}
    for did, settings in base.items():
        over = overrides.get(did)
        if not over:
            rules[did] = settings
            continue
        meta = {k: over.pop(k) for k in (*META_FIELDS, "packages_version") if k in over}
        params = replace(settings.params, **over) if over else settings.params
        rules[did] = replace(settings, params=params, **meta)
        _check_section(where, rules[did], errors)
    if errors:
        raise RuleConfigError(errors)
    return RuleConfig(
        name=path.stem,
        version=str(version),
        path=path,
        rules=rules,
        description=description,
        extends=((parent.name, *parent.extends) if parent is not None else ()),
    )


def _check_table(
    where: str,
    directory: Path,
    cls: type[BaseDetector],
    table: Mapping[str, Any],
    errors: list[str],
) -> dict[str, Any]:
    """The coerced values of one detector table; problems go to `errors`."""
    did = cls.id
    hints = param_types(cls.params_class)
    allowed = [*META_FIELDS, *hints]
    if did == "split_charging":
        allowed.append("packages_version")
    out: dict[str, Any] = {}
    for name, value in table.items():
        at = f"{where}: [{did}] {name}"
        if name not in allowed:
            errors.append(f"{at}: unknown field{_suggest(name, allowed)}")
        elif name == "enabled":
            if isinstance(value, bool):
                out[name] = value
            else:
                errors.append(f"{at}: expected true or false, got {_toml(value)}")
        elif name == "kind":
            if value in KINDS:
                out[name] = value
            else:
                errors.append(f'{at}: expected "violation" or "suspicious", got {_toml(value)}')
        elif name == "packages_version":
            if isinstance(value, str) and value:
                out[name] = value
            else:
                errors.append(f"{at}: expected a version string, got {_toml(value)}")
        else:
            tp = hints[name]
            coerced = _coerce(tp, value)
            if coerced is _BAD:
                errors.append(f"{at}: expected {_describe(tp)}, got {_toml(value)}")
                continue
            if name == "packages_path":
                coerced = str((directory / coerced).resolve())
            problem = _bounds(name, coerced)
            if problem is not None:
                errors.append(f"{at}: expected {problem}, got {_toml(value)}")
                continue
            out[name] = coerced
    return out


def _check_section(where: str, rule: RuleSettings, errors: list[str]) -> None:
    """Checks across fields, on the merged values."""
    p = rule.params
    at = f"{where}: [{rule.detector_id}]"
    start, end = getattr(p, "start_hour", None), getattr(p, "end_hour", None)
    if start is not None and end is not None and not start < end:
        errors.append(f"{at} start_hour: expected < end_hour ({end}), got {start}")
    if rule.detector_id == "split_charging":
        from models.detectors.billing import load_packages

        path = getattr(p, "packages_path", None)
        try:
            version, _ = load_packages(path)
        except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
            errors.append(f"{at} packages_path: cannot load the package library: {exc}")
            return
        if rule.packages_version is not None and rule.packages_version != version:
            errors.append(
                f"{at} packages_version: expected the library's version {version!r}, "
                f"got {rule.packages_version!r}"
            )


# --- types and ranges ----------------------------------------------------------------------


@cache
def param_types(cls: type[Params]) -> dict[str, Any]:
    """Field name -> resolved type of a Params dataclass."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def _coerce(tp: Any, value: Any) -> Any:
    """The value as the dataclass holds it (lists become tuples), or `_BAD`."""
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        for arg in typing.get_args(tp):
            if arg is not type(None):
                out = _coerce(arg, value)
                if out is not _BAD:
                    return out
        return _BAD
    if tp is bool:
        return value if isinstance(value, bool) else _BAD
    if tp is int:
        return value if type(value) is int else _BAD
    if tp is float:
        return float(value) if type(value) in (int, float) else _BAD
    if tp is str:
        return value if isinstance(value, str) else _BAD
    if origin is tuple:
        if not isinstance(value, list):
            return _BAD
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            items = [_coerce(args[0], v) for v in value]
        elif len(args) == len(value):
            items = [_coerce(a, v) for a, v in zip(args, value, strict=True)]
        else:
            return _BAD
        return _BAD if any(i is _BAD for i in items) else tuple(items)
    raise TypeError(f"unsupported parameter type {tp!r}")


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_describe(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"an array of {_describe(args[0])}"
        return "[" + ", ".join(_describe(a) for a in args) + "]"
    return {int: "int", float: "number", str: "string", bool: "true or false"}.get(tp, str(tp))


_HHMM = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")


def _hhmm(text: str) -> int | None:
    m = _HHMM.match(text)
    if m is None:
        return None
    minutes = int(m[1]) * 60 + int(m[2])
    return minutes if minutes <= 1440 else None


def _bounds(name: str, value: Any) -> str | None:
    """None if the value is in range, else what was expected."""
    if name == "severity_steps":
        s2, s3 = value
        return None if 1 <= s2 <= s3 else "[step2, step3] with 1 <= step2 <= step3"
    if name.startswith("severity_"):
        return None if 1 <= value <= 3 else "int in 1..3"
    if name in ("start_hour", "end_hour"):
        return None if 0 <= value <= 24 else "int in 0..24"
    if name == "min_match_score":
        return None if 0 <= value <= 1 else "number in 0..1"
    if name == "tolerance_m":
        return None if value >= 0 else "number >= 0"
    if name in ENUMS:
        symbols = ENUMS[name]
        ok = bool(value) and all(v in symbols for v in value)
        return None if ok else f"a non-empty array of {', '.join(symbols)}"
    if name == "windows":
        for weekday, start, end in value:
            s, e = _hhmm(start), _hhmm(end)
            if not 0 <= weekday <= 6 or s is None or e is None or not s < e:
                return '[[weekday 0..6, "HH:MM", "HH:MM"], ...] with start < end'
        return None
    if name == "packages_path":
        return None if Path(value).is_file() else "an existing file"
    if isinstance(value, int):
        return None if value >= 1 else "int >= 1"
    if isinstance(value, float):
        return None if value > 0 else "number > 0"
    return None


def _toml(value: Any) -> str:
    """A value as it reads in TOML."""
    if isinstance(value, tuple):
        value = list(value)
    try:
        return json.dumps(value, ensure_ascii=False)
    except TypeError:
        return repr(value)


def _suggest(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _show_path(path: Path) -> str:
    """The path relative to the working directory when it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# --- documentation -------------------------------------------------------------------------


@cache
def field_docs(cls: type[Params]) -> dict[str, str]:
    """The docstrings written under each field of a Params dataclass (and its bases)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not (isinstance(klass, type) and issubclass(klass, Params)):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, after in zip(body, [*body[1:], None], strict=True):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[node.target.id] = " ".join(after.value.value.split())
    for name, text in META_DOCS.items():
        docs.setdefault(name, text)
    return docs


def to_toml_value(value: Any) -> str:
    """A parameter value written as TOML (for `fundwatch rules show` and generated files)."""
    return _toml(value)
