"""The spec format reference, generated from the JSON Schema that pydantic derives from ``ModelSpec``."""

from __future__ import annotations

import json

from .common import code, md_table, write_page


def _type(prop: dict) -> str:
    if "$ref" in prop:
        name = prop["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    if "anyOf" in prop:
        return " or ".join(_type(p) for p in prop["anyOf"])
    if "enum" in prop:
        return " / ".join(f"`{v}`" for v in prop["enum"])
    kind = prop.get("type", "any")
    if kind == "array":
        return f"list of {_type(prop.get('items', {}))}"
    if kind == "object" and isinstance(prop.get("additionalProperties"), dict):
        return f"mapping to {_type(prop['additionalProperties'])}"
    return {"string": "string", "integer": "integer", "number": "number", "boolean": "boolean",
            "null": "null", "object": "mapping"}.get(kind, kind)


def _default(prop: dict, required: bool) -> str:
    if required:
        return "**required**"
    if "default" in prop:
        return f"`{json.dumps(prop['default'])}`"
    return "—"


def _section(name: str, schema: dict) -> str:
    required = set(schema.get("required", []))
    rows = [[f"`{key}`", _type(prop), _default(prop, key in required), prop.get("description", "")]
            for key, prop in schema.get("properties", {}).items()]
    text = f"## {name}\n\n{(schema.get('description') or '').strip()}\n\n"
    text += "Unknown keys are rejected.\n\n" if schema.get("additionalProperties") is False else ""
    return text + md_table(["key", "type", "default", "meaning"], rows) + "\n"


def generate_schema_page() -> None:
    from tokenprune.spec import json_schema
    from tokenprune.spec_testdata import json_schema_of_test_model

    schema, test_schema = json_schema(), json_schema_of_test_model()
    parts = ["# Spec format reference\n\n",
             "Generated from `tokenprune.spec.json_schema()` (the pydantic model `ModelSpec`) and "
             "`tokenprune.spec_testdata.json_schema_of_test_model()` (`TestModelSpec`) on every docs build. The same "
             "schemas ship as `tokenprune/model_specs/spec.schema.json` (a spec `NAME.yaml`) and "
             "`tokenprune/model_specs/test.schema.json` (its test data `NAME.test.yaml`, beside it); editors that "
             "understand JSON Schema can validate the files with them. How to write a spec is explained in "
             "{doc}`/reference/spec-format` and {doc}`/guides/add-a-model`.\n\n",
             _section("ModelSpec", schema)]
    for name, sub in sorted(schema.get("$defs", {}).items()):
        parts.append(_section(name, sub))
    parts.append(_section("TestModelSpec", test_schema))
    parts.append("## The JSON Schemas\n\n`spec.schema.json`:\n\n" + code(json.dumps(schema, indent=2), "json"))
    parts.append("\n`test.schema.json`:\n\n" + code(json.dumps(test_schema, indent=2), "json"))
    write_page("spec-schema.md", "".join(parts))
