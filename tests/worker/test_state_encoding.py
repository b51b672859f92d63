"""The changelog's JSON of a state (`encode_state`, orjson with json.dumps as the fallback)
reads back exactly as json.dumps's JSON did."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.worker.state_table import encode_state


def _old(state: Any) -> bytes:
    return json.dumps(state, separators=(",", ":")).encode()


def _same(a: Any, b: Any) -> bool:
    """Equal, NaN included, and of the same types (1 and 1.0, -0.0 and 0.0 told apart)."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and repr(a) == repr(b))
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(_same, a, b))
    return a == b


@pytest.mark.parametrize(
    "state",
    [
        {"due": 1_795_000_000_000, "n": 3, "ids": ["ST1", "ST2"], "open": True, "x": None},
        {"mean": 0.1 + 0.2, "big": 1.5e16, "tiny": 1e-7, "neg": -0.0, "m": [[1, 2.5], (3, 4)]},
        {"name": "医保基金 ü", "nested": {"a": {"b": [{"c": "d"}]}}},
        {"nan": math.nan},  # orjson would write null: json.dumps writes it
        {"inf": [math.inf, -math.inf]},
        {"huge": 2**70},  # beyond orjson's 64 bits
        {"i64": 2**63 - 1, "low": -(2**63)},
        {1: "int key", "k": "v"},  # json.dumps writes "1"
        {"s": "null in a string"},
        {"lone surrogate": "\ud800"},  # orjson refuses it, json.dumps escapes it
        {},
    ],
)
def test_the_state_reads_back_as_json_dumps_wrote_it(state: dict[Any, Any]) -> None:
    encoded = encode_state(state)
    assert isinstance(encoded, bytes)
    assert _same(json.loads(encoded), json.loads(_old(state)))


def test_what_json_dumps_rejects_is_still_rejected() -> None:
    with pytest.raises(TypeError):
        encode_state({"s": {1, 2}})


_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
)
_states = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(), _states, max_size=6))
def test_any_plain_state_reads_back_as_json_dumps_wrote_it(state: dict[str, Any]) -> None:
    assert _same(json.loads(encode_state(state)), json.loads(_old(state)))
