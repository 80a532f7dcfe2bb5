"""The OpenAPI document as a client generator or an editor uses it (issue
14): info.version is kiln's version, servers the address the server listens
on, and components.schemas.Recipe a real JSON Schema of the recipe —
every recipe in examples/ and the web UI's examples is valid under it, and
recipes kiln refuses for a reason the schema can express are invalid
under it too. The schema subset is checked by a small validator here
(type, properties, additionalProperties, required, items, enum, pattern,
min/max, lengths, uniqueItems), which is all the document uses."""
import glob
import json
import os
import re
import subprocess

import pytest
import requests

from test_api import serve  # noqa: F401

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TYPES = {"object": dict, "array": list, "string": str, "boolean": bool}
KNOWN = {"type", "properties", "additionalProperties", "required", "items", "enum", "pattern",
         "minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems", "uniqueItems",
         "description", "default", "example", "format"}


def errors(schema, v, path="$"):
    unknown = set(schema) - KNOWN
    assert not unknown, f"{path}: the validator does not know {unknown}"
    t = schema.get("type")
    if t == "integer":
        if not (isinstance(v, int) and not isinstance(v, bool)):
            return [f"{path}: not an integer"]
    elif t and not isinstance(v, TYPES[t]) or (t == "string" and isinstance(v, bool)):
        return [f"{path}: not {t}"]
    out = []
    if "enum" in schema and v not in schema["enum"]:
        out.append(f"{path}: not one of {schema['enum']}")
    if isinstance(v, str):
        if "pattern" in schema and not re.search(schema["pattern"], v):
            out.append(f"{path}: does not match {schema['pattern']}")
        if len(v) > schema.get("maxLength", len(v)) or len(v) < schema.get("minLength", 0):
            out.append(f"{path}: length")
    if isinstance(v, int) and not isinstance(v, bool):
        if v < schema.get("minimum", v) or v > schema.get("maximum", v):
            out.append(f"{path}: out of range")
    if isinstance(v, list):
        if len(v) > schema.get("maxItems", len(v)) or len(v) < schema.get("minItems", 0):
            out.append(f"{path}: item count")
        if schema.get("uniqueItems") and len(set(map(json.dumps, v))) != len(v):
            out.append(f"{path}: items not unique")
        for i, x in enumerate(v):
            out += errors(schema.get("items", {}), x, f"{path}[{i}]")
    if isinstance(v, dict):
        props = schema.get("properties", {})
        for k in schema.get("required", []):
            if k not in v:
                out.append(f"{path}: {k} missing")
        for k, x in v.items():
            if k in props:
                out += errors(props[k], x, f"{path}.{k}")
            elif schema.get("additionalProperties") is False:
                out.append(f"{path}: unknown field {k}")
    return out


@pytest.fixture
def doc(serve):
    s = serve("--no-auth", "--no-workers")
    r = requests.get(s.url("/api/v1/openapi.json"))
    assert r.status_code == 200
    return s, r.json()


def test_version_and_servers(kiln_bin, doc):
    s, d = doc
    version = subprocess.run([kiln_bin, "--version"], capture_output=True, text=True).stdout.split()[1]
    assert d["info"]["version"] == version
    assert d["servers"] == [{"url": s.base}]


def test_recipe_schema_accepts_every_example(kiln_bin, doc):
    _, d = doc
    schema = d["components"]["schemas"]["Recipe"]
    files = sorted(glob.glob(os.path.join(ROOT, "examples", "*.json")) +
                   glob.glob(os.path.join(ROOT, "src", "http", "ui", "examples", "*.json")))
    assert len(files) >= 6, files
    for f in files:
        recipe = json.load(open(f))
        assert errors(schema, recipe) == [], f
        # and kiln agrees
        assert subprocess.run([kiln_bin, "validate", f]).returncode == 0, f
    assert errors(schema, schema["example"]) == []


@pytest.mark.parametrize("bad", [
    {"pakages": []},
    {"base": "alpine"},
    {"outputs": ["zip"]},
    {"outputs": []},
    {"outputs": ["tar", "tar"]},
    {"packages": ["Bad"]},
    {"steps": ["FROB x"]},
    {"overlays": [{"name": "o", "files": [{"path": "etc/x"}]}]},
    {"overlays": [{"name": "o", "files": [{"path": "/x", "mode": "9"}]}]},
    {"resources": {"memory_mb": 1}},
    {"resources": {"cpu": 1}},
    {"healthcheck": {}},
    {"source_date_epoch": -1},
], ids=lambda b: json.dumps(b))
def test_recipe_schema_refuses_what_kiln_refuses(kiln_bin, doc, tmp_path, bad):
    _, d = doc
    schema = d["components"]["schemas"]["Recipe"]
    recipe = {"name": "x", **bad}
    assert errors(schema, recipe), recipe
    p = tmp_path / "r.json"
    p.write_text(json.dumps(recipe))
    assert subprocess.run([kiln_bin, "validate", str(p)], capture_output=True).returncode == 1
