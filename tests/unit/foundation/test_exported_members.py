"""The package's public surface is what `__all__` says, sorted, and nothing else."""

from __future__ import annotations

import sonia
import sonia.errors


def test_top_level_exports_are_declared_and_sorted() -> None:
    public = {name for name in vars(sonia) if not name.startswith("_")} - {"annotations"}
    modules = {name for name in public if type(getattr(sonia, name)).__name__ == "module"}
    assert sorted(sonia.__all__) == list(sonia.__all__)
    assert set(sonia.__all__) | {"__version__"} >= public - modules


def test_every_api_error_is_reachable_by_its_code() -> None:
    for code, cls in sonia.errors.API_ERRORS.items():
        assert cls.code == code
        assert issubclass(cls, sonia.errors.ApiError)
