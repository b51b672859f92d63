"""The firing examples in the detector docstrings are run, so the documentation stays true."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "models.alerts",
    "models.window",
    "models.detector",
    "models.runner",
    *(
        f"models.detectors.{m}"
        for m in (
            "frequency",
            "supply",
            "billing",
            "drugs",
            "identity",
            "inpatient",
            "licence",
            "groups",
        )
    ),
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_every_detector_documents_a_firing_example() -> None:
    from models.detectors import DETECTOR_CLASSES

    for cls in DETECTOR_CLASSES:
        doc = cls.__doc__ or ""
        assert ">>>" in doc and f"[{cls.id}]" in doc, cls.__name__
