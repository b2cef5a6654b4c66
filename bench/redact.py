"""Redaction of adversarial text, 1 to 10 MiB, against `str.replace` over the same text.

    python bench/redact.py [--sizes 1,2,4,8,10]

Each input is built to make a backtracking pattern quadratic: runs that a pattern
can start inside of at every step (`sk-sk-sk-...`, `eyJ-eyJ-...`), keywords with no
value, long base64 runs, a PEM header with no end. Linear redaction shows the same
seconds per MiB at every size; a quadratic pattern doubles it with each doubling.
The baseline is `str.replace` of a character that is not in the text, run over the
same string in the same process: one plain pass over the memory.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from sonia.redact import Redactor

MIB = 1024 * 1024

INPUTS: dict[str, str] = {
    "sk- run": "sk-",
    "eyJ- run": "eyJ-",
    "base64 run": "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3",
    "a...@": "a",
    "password= chain": "password=",
    "Bearer chain": "Bearer ",
    "lone surrogates": "\ud800token ",
    "PEM without end": "-----BEGIN PRIVATE KEY-----\nMIIEv",
}


def build(unit: str, mib: int) -> str:
    text = unit * (mib * MIB // len(unit) + 1)
    return text[: mib * MIB] + "@"


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,2,4,8,10", help="MiB, comma-separated")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    redactor = Redactor(["Qm9vdHN0cmFwLXNlcnZpY2UtdG9rZW4tZXhhbXBsZQ"])
    print(f"{'input':<18}{'MiB':>5}{'redact s/MiB':>14}{'replace s/MiB':>15}{'ratio':>9}")
    for name, unit in INPUTS.items():
        for mib in sizes:
            text = build(unit, mib)
            redact_s = timed(lambda text=text: redactor.redact(text))  # type: ignore[misc]
            replace_s = timed(lambda text=text: text.replace("\x00", "-"))  # type: ignore[misc]
            print(f"{name:<18}{mib:>5}{redact_s / mib:>14.4f}{replace_s / mib:>15.5f}"
                  f"{redact_s / max(replace_s, 1e-9):>9.0f}x", flush=True)


if __name__ == "__main__":
    main()
