"""The exception tree and DESIGN.md's error table say the same thing."""

from __future__ import annotations

import re
from pathlib import Path

from sonia.errors import API_ERRORS

DESIGN = Path(__file__).resolve().parents[3] / "docs" / "DESIGN.md"


def design_table() -> dict[str, int]:
    text = DESIGN.read_text()
    section = text[text.index("## Error codes"):]
    return {code: int(status)
            for code, status in re.findall(r"^\| `([A-Z_]+)` \| (\d{3}) \|", section, re.M)}


def test_every_design_code_has_an_error_class_with_its_status() -> None:
    table = design_table()
    assert table, "DESIGN.md lists error codes"
    for code, status in table.items():
        assert code in API_ERRORS, code
        assert API_ERRORS[code].status == status, code


def test_no_error_class_is_missing_from_the_design() -> None:
    assert set(API_ERRORS) == set(design_table())
