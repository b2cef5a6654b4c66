"""The tools Sonia offers, as data: name, tier, description and argument schema.

    tool         tier  does
    file.read    0     up to max_file_bytes of a regular file, as UTF-8 text
    file.list    0     the entries of a directory: name, type, size
    file.search  0     a literal substring in the files below a directory
    shell.run    1/3   an allowlisted command (tier of its plan: 1 read-only, 3 mutating)
    file.write   2     create, overwrite or append, atomically
    file.delete  3     a regular file or an empty directory

Every tool declares a JSON-schema-like argument schema (object, typed properties,
required, defaults, no unknown keys); `check_args` checks arguments against it
(400 INVALID_ARGUMENT) and fills in defaults. EVA checks a proposal with it and
OpenClaw checks again before running: one definition, two independent checks.
The tools themselves run in OpenClaw (`sonia.services.openclaw.tools.Toolbox`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sonia.errors import InvalidArgument

__all__ = ["MAX_PATH_BYTES", "TOOL_SPECS", "ToolSpec", "check_args"]

MAX_PATH_BYTES = 4096
"""The longest path a tool argument may carry, in bytes."""

_PATH = {"type": "string", "minLength": 1, "maxLength": MAX_PATH_BYTES}


@dataclass(frozen=True)
class ToolSpec:
    name: str
    tier: int
    description: str
    schema: dict[str, Any] = field(hash=False)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "tier": self.tier, "description": self.description,
                "schema": self.schema}


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required,
            "additionalProperties": False}


TOOL_SPECS: tuple[ToolSpec, ...] = (
    ToolSpec("file.read", 0, "Read a text file in the workspace.",
             _object({"path": _PATH}, ["path"])),
    ToolSpec("file.list", 0, "List a directory in the workspace.",
             _object({"path": {**_PATH, "default": "."}}, [])),
    ToolSpec("file.search", 0, "Find lines containing a literal string below a directory.",
             _object({
                 "query": {"type": "string", "minLength": 1, "maxLength": 1024},
                 "path": {**_PATH, "default": "."},
                 "max_results": {"type": "integer", "minimum": 1, "maximum": 1000,
                                 "default": 100},
             }, ["query"])),
    ToolSpec("shell.run", 1, "Run an allowlisted command (tier 3 when it changes files).",
             _object({
                 "argv": {"type": "array", "minItems": 1, "maxItems": 256,
                          "items": {"type": "string", "maxLength": 4096}},
                 "cwd": {**_PATH, "default": "."},
             }, ["argv"])),
    ToolSpec("file.write", 2, "Create, overwrite or append to a file, atomically.",
             _object({
                 "path": _PATH,
                 "content": {"type": "string"},
                 "mode": {"type": "string", "enum": ["create", "overwrite", "append"],
                          "default": "overwrite"},
                 "parents": {"type": "boolean", "default": False},
             }, ["path", "content"])),
    ToolSpec("file.delete", 3, "Delete a file or an empty directory.",
             _object({"path": _PATH}, ["path"])),
)

_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
}


def _check_value(name: str, schema: dict[str, Any], value: Any) -> None:
    kind = schema["type"]
    if not _TYPES[kind](value):
        raise InvalidArgument(f"argument {name!r} must be of type {kind}")
    if "enum" in schema and value not in schema["enum"]:
        raise InvalidArgument(f"argument {name!r} must be one of {schema['enum']}")
    if kind == "string":
        if len(value) < schema.get("minLength", 0):
            raise InvalidArgument(f"argument {name!r} is empty")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise InvalidArgument(f"argument {name!r} is longer than {schema['maxLength']}")
    if kind == "integer":
        if value < schema.get("minimum", value) or value > schema.get("maximum", value):
            raise InvalidArgument(f"argument {name!r} must be between {schema.get('minimum')} "
                                  f"and {schema.get('maximum')}")
    if kind == "array":
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value)):
            raise InvalidArgument(f"argument {name!r} has {len(value)} items")
        for index, item in enumerate(value):
            _check_value(f"{name}[{index}]", schema["items"], item)


def check_args(schema: dict[str, Any], args: Any) -> dict[str, Any]:
    """`args` checked against object `schema`, with defaults filled in."""
    if not isinstance(args, dict):
        raise InvalidArgument("arguments must be an object")
    properties: dict[str, Any] = schema["properties"]
    unknown = sorted(set(args) - set(properties))
    if unknown:
        raise InvalidArgument(f"unknown arguments: {', '.join(map(repr, unknown))}")
    missing = [name for name in schema["required"] if name not in args]
    if missing:
        raise InvalidArgument(f"missing arguments: {', '.join(map(repr, missing))}")
    checked: dict[str, Any] = {}
    for name, prop in properties.items():
        if name in args:
            _check_value(name, prop, args[name])
            checked[name] = args[name]
        elif "default" in prop:
            checked[name] = prop["default"]
    return checked
