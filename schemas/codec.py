"""Avro single-object codec for the FundWatch records.

Wire format (Avro spec, "Single object encoding")::

    C3 01 | CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical Form (8 bytes, LE)
          | Avro binary body

Schemas come from ``avro/*.avsc`` (current version) and ``avro/history/<stem>.v<N>.avsc``
(older versions); the current version is one more than the newest history file. Records are
plain dicts; ``timestamp-millis`` fields are int epoch milliseconds on both sides, because the
codec works with copies of the schemas whose ``logicalType`` is stripped (the canonical form
ignores logical types, so fingerprints are unchanged). Older writer versions are resolved to the
current reader schema; every failure is a :class:`CodecError` with a stable ``reason_code``.
Encoding is strict: wrong types (a float for a long, a str for an array...), out-of-range ints
and fields the schema does not have are an :class:`EncodeError`; missing fields with a default
get it.
"""

from __future__ import annotations

import functools
import io
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form
from fastavro.validation import ValidationError, validate

__all__ = [
    "MAGIC",
    "Codec",
    "CodecError",
    "CorruptRecordError",
    "EncodeError",
    "NotSingleObjectError",
    "SchemaInfo",
    "UnexpectedSchemaError",
    "UnknownFingerprintError",
]

MAGIC = b"\xc3\x01"
HEADER_SIZE = len(MAGIC) + 8
AVRO_DIR = Path(__file__).with_name("avro")
_HISTORY_NAME = re.compile(r"^(?P<stem>\w+)\.v(?P<version>\d+)\.avsc$")
_MAX_DETAIL = 200
Check = Callable[[Any], bool]


class CodecError(Exception):
    """Base of every codec failure; ``reason_code`` is stable snake_case (dead-letter reason)."""

    reason_code = "codec_error"


class NotSingleObjectError(CodecError):
    """Shorter than the header, or not starting with the magic bytes C3 01."""

    reason_code = "not_single_object"


class UnknownFingerprintError(CodecError):
    """The writer-schema fingerprint is not one of the known schema versions."""

    reason_code = "unknown_fingerprint"

    def __init__(self, fp: bytes) -> None:
        super().__init__(f"unknown writer schema fingerprint {fp.hex()} (wire byte order)")
        self.fingerprint = fp


class CorruptRecordError(CodecError):
    """The Avro body is undecodable, truncated, or followed by trailing bytes."""

    reason_code = "corrupt_avro"


class UnexpectedSchemaError(CodecError):
    """``decode(expect=...)`` found another record type."""

    reason_code = "unexpected_schema"


class EncodeError(CodecError):
    """The record does not fit the schema."""

    reason_code = "invalid_record"


@dataclass(frozen=True)
class SchemaInfo:
    """One version of one record schema."""

    name: str  # record name, e.g. "SettlementEvent"
    version: int
    fingerprint: bytes  # 8 bytes, little-endian, as on the wire
    parsed: Any = field(repr=False, compare=False)  # fastavro parsed schema, logicalType stripped

    @property
    def header(self) -> bytes:
        """The 10-byte single-object header of records written with this version."""
        return MAGIC + self.fingerprint


def _strip_logical_types(node: Any) -> Any:
    """A copy of a schema JSON tree without ``logicalType`` annotations."""
    if isinstance(node, dict):
        return {k: _strip_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_strip_logical_types(v) for v in node]
    return node


def _compile_check(schema: Any, named: dict[str, Check]) -> Check | None:
    """A fast predicate for what fastavro's writer would coerce silently, or None if nothing.

    The writer truncates a float written as an int, writes a bool as 0/1 and an int beyond
    32 bits, turns any truthy value into ``true`` and a str into an array of characters. It does
    reject misfit strings, bytes, enums and union branches itself. fastavro's full validator is
    several times slower than the write, so it only runs to explain a failure.
    """
    if isinstance(schema, list):  # the writer picks a union branch by validating it
        return None
    kind = schema if isinstance(schema, str) else schema["type"]
    if kind in _PRIMITIVE_CHECKS:
        return _PRIMITIVE_CHECKS[kind]
    if kind == "array":
        item = _compile_check(schema["items"], named)
        if item is None:
            return _is_sequence
        return lambda v: _is_sequence(v) and all(map(item, v))
    if kind == "map":
        value = _compile_check(schema["values"], named)
        if value is None:
            return None
        return lambda v: isinstance(v, Mapping) and all(map(value, v.values()))
    if kind == "record":
        fields: list[tuple[str, Any, Check]] = []

        def check(v: Any) -> bool:
            return (type(v) is dict or isinstance(v, Mapping)) and all(
                field_check(v.get(name, default)) for name, default, field_check in fields
            )

        named[schema["name"]] = check  # before the fields: a record may refer to itself
        for f in schema["fields"]:
            field_check = _compile_check(f["type"], named)
            if field_check is not None:
                fields.append((f["name"], f.get("default"), field_check))
        return check
    if kind in named:  # a reference to a record (fastavro's parsed schema uses full names)
        return lambda v: named[kind](v)
    return None  # null, string, bytes, enum, fixed: the writer rejects misfits itself


def _is_integral(v: Any) -> bool:
    return type(v) is int or (isinstance(v, Integral) and not isinstance(v, bool))


def _is_real(v: Any) -> bool:
    return type(v) is float or (isinstance(v, Real) and not isinstance(v, bool))


def _is_sequence(v: Any) -> bool:
    return type(v) is list or (isinstance(v, Sequence) and not isinstance(v, str | bytes))


_PRIMITIVE_CHECKS: dict[str, Check] = {
    "boolean": lambda v: v is True or v is False,
    "int": lambda v: _is_integral(v) and -(2**31) <= v < 2**31,
    "long": lambda v: _is_integral(v) and -(2**63) <= v < 2**63,
    "float": _is_real,
    "double": _is_real,
}


def _type_name(value: Any) -> str:
    return "None (null or missing)" if value is None else type(value).__name__


def _detail(exc: BaseException) -> str:
    """Short, length-capped description of a low-level exception."""
    text = str(exc)
    if len(text) > _MAX_DETAIL:
        text = text[:_MAX_DETAIL] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Codec:
    """Encodes and decodes single-object Avro records of a fixed set of schema versions."""

    def __init__(self, schemas: Iterable[tuple[Mapping[str, Any], int]]) -> None:
        """Build from ``(schema JSON, version)`` pairs; the highest version of a name is current."""
        self._by_fp: dict[bytes, SchemaInfo] = {}
        self._versions: dict[str, dict[int, SchemaInfo]] = {}
        self._checks: dict[bytes, Check] = {}
        for schema, version in schemas:
            name = schema["name"]
            fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))
            if fp in self._by_fp:
                other = self._by_fp[fp]
                raise ValueError(
                    f"{name} v{version} has the same canonical form as "
                    f"{other.name} v{other.version}; bump a version only with a wire change"
                )
            if version in self._versions.get(name, {}):
                raise ValueError(f"{name} v{version} is defined twice")
            info = SchemaInfo(name, version, fp, parse_schema(_strip_logical_types(schema)))
            self._by_fp[fp] = info
            check = _compile_check(info.parsed, {})
            self._checks[fp] = check if check is not None else lambda v: True
            self._versions.setdefault(name, {})[version] = info
        self._current = {n: v[max(v)] for n, v in self._versions.items()}

    @classmethod
    def from_dir(cls, avro_dir: Path) -> Codec:
        """Load ``<stem>.avsc`` (current) and ``history/<stem>.v<N>.avsc`` (older) files."""
        history: dict[str, list[tuple[dict[str, Any], int]]] = {}
        for path in sorted((avro_dir / "history").glob("*.avsc")):
            m = _HISTORY_NAME.match(path.name)
            if m is None:
                raise ValueError(f"history schema {path.name} is not named <stem>.v<N>.avsc")
            history.setdefault(m["stem"], []).append(
                (json.loads(path.read_text("utf-8")), int(m["version"]))
            )
        pairs: list[tuple[dict[str, Any], int]] = []
        for path in sorted(avro_dir.glob("*.avsc")):
            schema = json.loads(path.read_text("utf-8"))
            old = history.pop(path.stem, [])
            for old_schema, _ in old:
                if old_schema["name"] != schema["name"]:
                    raise ValueError(f"history of {path.name} names {old_schema['name']}")
            pairs += old
            pairs.append((schema, max((v for _, v in old), default=0) + 1))
        if history:
            raise ValueError(f"history schemas without a current schema: {sorted(history)}")
        return cls(pairs)

    @classmethod
    def default(cls) -> Codec:
        """The codec of the package's schemas (loaded once, shared)."""
        return _default_codec()

    @property
    def names(self) -> list[str]:
        """Record names known to the codec."""
        return sorted(self._current)

    def current(self, name: str) -> SchemaInfo:
        """The current (newest) version of record ``name``."""
        try:
            return self._current[name]
        except KeyError:
            raise KeyError(f"unknown record name {name!r}; known: {self.names}") from None

    def version(self, name: str, version: int) -> SchemaInfo:
        """A given version of record ``name``."""
        try:
            return self._versions[name][version]
        except KeyError:
            raise KeyError(f"unknown schema {name!r} version {version}") from None

    def encode(self, name: str, record: Mapping[str, Any]) -> bytes:
        """Single-object encoding of ``record`` with the current version of ``name``."""
        return self._encode(self.current(name), record)

    def encode_with_version(self, name: str, version: int, record: Mapping[str, Any]) -> bytes:
        """Like :meth:`encode` but with an older version (tests, evolution checks)."""
        return self._encode(self.version(name, version), record)

    def info(self, data: bytes | None) -> SchemaInfo:
        """The writer schema named by the header of ``data`` (the body is not read)."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise NotSingleObjectError(f"not bytes but {_type_name(data)} (e.g. a tombstone)")
        if len(data) < HEADER_SIZE or data[:2] != MAGIC:
            raise NotSingleObjectError(
                f"not an Avro single-object record: {len(data)} bytes, "
                f"starts with {bytes(data[:2]).hex() or 'nothing'} (expected c301)"
            )
        fp = bytes(data[2:HEADER_SIZE])
        try:
            return self._by_fp[fp]
        except KeyError:
            raise UnknownFingerprintError(fp) from None

    def decode(self, data: bytes | None, expect: str | None = None) -> dict[str, Any]:
        """The record in ``data``; with ``expect``, it must be of that record name."""
        return self._decode(data, expect)[1]

    def decode_with_info(self, data: bytes | None) -> tuple[SchemaInfo, dict[str, Any]]:
        """Writer schema and record, resolved to the current version of its name."""
        return self._decode(data, None)

    def _decode(self, data: bytes | None, expect: str | None) -> tuple[SchemaInfo, dict[str, Any]]:
        writer = self.info(data)
        if expect is not None and writer.name != expect:
            self.current(expect)  # a typo in `expect` is a bug, not bad data: KeyError
            raise UnexpectedSchemaError(f"expected a {expect} record, got {writer.name}")
        reader = self._current[writer.name]
        buf = io.BytesIO(data)
        buf.seek(HEADER_SIZE)
        try:
            # Same version: no schema resolution (faster); older: resolve to the current one.
            record = schemaless_reader(
                buf, writer.parsed, None if reader is writer else reader.parsed
            )
        except Exception as exc:  # fastavro raises EOFError, ValueError, IndexError, ...
            raise CorruptRecordError(
                f"undecodable {writer.name} v{writer.version} body: {_detail(exc)}"
            ) from exc
        extra = len(data) - buf.tell()
        if extra:
            raise CorruptRecordError(
                f"{extra} trailing bytes after a {writer.name} v{writer.version} record"
            )
        if not isinstance(record, dict):  # cannot happen for record schemas; keep the contract
            raise CorruptRecordError(f"{writer.name} v{writer.version} body is not a record")
        return writer, record

    def _encode(self, info: SchemaInfo, record: Mapping[str, Any]) -> bytes:
        error: Exception | None = None
        if self._checks[info.fingerprint](record):
            buf = io.BytesIO()
            buf.write(info.header)
            try:
                schemaless_writer(buf, info.parsed, record, strict_allow_default=True)
                return buf.getvalue()
            except Exception as exc:  # e.g. a field the schema does not have
                error = exc
        raise EncodeError(
            f"{info.name} v{info.version} record does not fit the schema: "
            f"{_explain(info, record, error)}"
        ) from error


def _explain(info: SchemaInfo, record: Mapping[str, Any], error: Exception | None) -> str:
    """Name the offending field(s) with fastavro's validator (slow; failures only)."""
    detail = _detail(error) if error else "wrong type or value"
    try:
        validate(record, info.parsed, raise_errors=True)
    except ValidationError as err:
        fields = sorted(
            {
                f"{'.'.join(e.field.split('.')[-2:])} (got {_type_name(e.datum)})"
                for e in err.errors
                if e.field
            }
        )
        if fields:
            return f"invalid field {', '.join(fields)}"
    except Exception as exc:
        detail = _detail(exc)
    return detail


@functools.cache
def _default_codec() -> Codec:
    return Codec.from_dir(AVRO_DIR)
