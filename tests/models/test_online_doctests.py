"""The firing examples in the online models' docstrings are run, like the rules' (test_doctests)."""

from __future__ import annotations

import doctest
import importlib

import pytest

from models.online import MODEL_CLASSES

MODULES = [
    "models.online.common",
    "models.online.institution_series",
    "models.online.peers",
    "models.online.hst",
    "models.online.settlement_score",
    "models.online.doctor_profile",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_every_model_documents_a_firing_example() -> None:
    for cls in MODEL_CLASSES:
        doc = cls.__doc__ or ""
        assert ">>>" in doc and f"[{cls.id}]" in doc, cls.__name__
        assert cls.__module__ in MODULES, cls.__module__
        assert cls.__doc__ is not None
