"""Validate documents against the JSON Schemas in the repository's ``schemas/`` folder.

``check(instance, "cli/ingest")`` validates against the newest version of ``schemas/cli/ingest.v*.schema.json``,
with every schema of the folder registered under its ``$id`` (so cross-file ``$ref``s resolve offline).

By default the check is *strict*: an object key that the schema does not declare fails, although the
published schemas accept undeclared keys (a consumer holding v1 keeps working when v1 gains an optional
key). Strict mode closes every object schema that declares ``properties`` or extends another through
``$ref`` (``unevaluatedProperties: false``), unless it says ``additionalProperties`` /
``unevaluatedProperties`` itself (open maps, the extractor description, the application's payload) or is
itself a ``$ref`` target (a base that others extend; it is closed where it is used). So a new key in a
command's output fails the tests until its schema documents it.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag, urljoin

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SCHEMAS_DIR = Path(__file__).resolve().parents[1] / "schemas"
DRAFT = "https://json-schema.org/draft/2020-12/schema"
_VERSIONED = re.compile(r"^(?P<name>.+)\.v(?P<version>[1-9][0-9]*)\.schema\.json$")

# Keywords whose value is a subschema, a list of subschemas, or a map of name → subschema.
_ONE = (
    "additionalProperties",
    "unevaluatedProperties",
    "items",
    "contains",
    "not",
    "if",
    "then",
    "else",
    "propertyNames",
    "unevaluatedItems",
)
_LIST = ("allOf", "anyOf", "oneOf", "prefixItems")
_MAP = ("properties", "patternProperties", "$defs", "dependentSchemas")


def schema_files() -> list[Path]:
    """Every ``*.schema.json`` under ``schemas/``, sorted."""
    return sorted(SCHEMAS_DIR.rglob("*.schema.json"))


def relpath(path: Path) -> str:
    return path.relative_to(SCHEMAS_DIR).as_posix()


def versions(name: str) -> dict[int, Path]:
    """``{version: file}`` of ``schemas/<name>.v<version>.schema.json`` (``name`` like ``cli/query``)."""
    folder = (SCHEMAS_DIR / name).parent
    stem = Path(name).name
    out: dict[int, Path] = {}
    for path in folder.glob(f"{stem}.v*.schema.json"):
        m = _VERSIONED.match(path.name)
        if m and m["name"] == stem:
            out[int(m["version"])] = path
    return out


def latest(name: str) -> Path | None:
    found = versions(name)
    return found[max(found)] if found else None


@cache
def load(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), path
    return data


def walk(schema: Any, pointer: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every subschema of ``schema`` (dicts only) with its JSON pointer, the root first."""
    if not isinstance(schema, dict):
        return
    yield pointer, schema
    for key in _ONE:
        if key in schema:
            yield from walk(schema[key], f"{pointer}/{_escape(key)}")
    for key in _LIST:
        for i, sub in enumerate(schema.get(key) or []):
            yield from walk(sub, f"{pointer}/{key}/{i}")
    for key in _MAP:
        for name, sub in (schema.get(key) or {}).items():
            yield from walk(sub, f"{pointer}/{_escape(key)}/{_escape(name)}")


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def refs(schema: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """``(pointer of the referring subschema, absolute target URI)`` of every ``$ref`` in a schema file."""
    base = schema["$id"]
    for pointer, node in walk(schema):
        if isinstance(node.get("$ref"), str):
            yield pointer, urljoin(base, node["$ref"])


def _targets(schemas: list[dict[str, Any]]) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for schema in schemas:
        for _, target in refs(schema):
            uri, fragment = urldefrag(target)
            out.add((uri, fragment))
    return out


def _closed(schema: dict[str, Any], targets: set[tuple[str, str]]) -> dict[str, Any]:
    out = copy.deepcopy(schema)
    for pointer, node in walk(out):
        if (out["$id"], pointer) in targets:
            continue
        if ("properties" in node or "$ref" in node) and not (
            "additionalProperties" in node or "unevaluatedProperties" in node
        ):
            node["unevaluatedProperties"] = False
    return out


@cache
def registry(strict: bool) -> Registry:
    schemas = [load(path) for path in schema_files()]
    if strict:
        targets = _targets(schemas)
        schemas = [_closed(s, targets) for s in schemas]
    resources = [(s["$id"], Resource.from_contents(s, default_specification=DRAFT202012)) for s in schemas]
    return Registry().with_resources(resources)


def schema_id(name: str) -> str:
    """The ``$id`` of the newest version of ``name`` (``payload``, ``model-info``, ``cli/query``, …)."""
    path = latest(name)
    assert path is not None, f"no schema schemas/{name}.v*.schema.json"
    return str(load(path)["$id"])


def validator(name: str, *, pointer: str = "", strict: bool = True) -> Draft202012Validator:
    """A validator for the newest version of ``name`` (or its subschema at ``pointer``, e.g. ``/$defs/hq``)."""
    root: dict[str, Any] = {"$schema": DRAFT, "$ref": schema_id(name) + (f"#{pointer}" if pointer else "")}
    if strict:
        root["unevaluatedProperties"] = False
    return Draft202012Validator(root, registry=registry(strict), format_checker=Draft202012Validator.FORMAT_CHECKER)


def errors(instance: Any, name: str, *, pointer: str = "", strict: bool = True) -> list[str]:
    """Readable validation errors (empty when ``instance`` is valid)."""
    found = validator(name, pointer=pointer, strict=strict).iter_errors(instance)
    lines = (f"at /{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in found)
    return sorted(set(lines))  # the root's closure and the referenced schema's may report the same key


def check(instance: Any, name: str, *, pointer: str = "", strict: bool = True) -> None:
    """Fail with every error when ``instance`` does not match the schema."""
    problems = errors(instance, name, pointer=pointer, strict=strict)
    assert not problems, f"does not match schemas/{name} ({'strict' if strict else 'published'}):\n" + "\n".join(
        problems[:20]
    )
