"""A JSON Schema (draft 2020-12) for one OCSF event class, compiled from OCSF's own source files.

The files under tests/data/ocsf/ are OCSF's schema as published (github.com/ocsf/ocsf-schema, the
release named in version.json; Apache-2.0, see NOTICE and LICENSE there), copied unchanged: the
attribute dictionary, the category list, the class, the classes it extends, the profiles they
include and every object reachable from them. This module reads them as the OCSF server does:

- a class or object is its `extends` chain merged from the root down; at each level the
  attributes of the files its `$include` names are merged first, then its own attributes;
- an attribute's definition is the dictionary's, with the class's or object's (requirement,
  enum values, description) merged over it; enum values add up;
- types: the dictionary's scalar types by their base (string, integer, long, float, boolean,
  json), with their regex and range; an object type is a reference to that object's schema;
  is_array makes an array of it;
- `required` attributes are required; integer enums allow only their values; the
  constraints at_least_one / just_one become anyOf / oneOf; attributes not defined are refused
  (additionalProperties false), except inside a free-form `object` (e.g. unmapped);
- class_uid, category_uid and type_uid are fixed by the class: category uid * 1000 + class uid,
  and class uid * 100 + activity_id.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "data" / "ocsf"

_SCALARS: dict[str, dict[str, Any]] = {
    "string_t": {"type": "string"},
    "integer_t": {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1},
    "long_t": {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1},
    "float_t": {"type": "number"},
    "boolean_t": {"type": "boolean"},
    "json_t": {},
}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """over merged into base, dicts recursively (enum values add up); over wins otherwise."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


class OcsfSchema:
    """OCSF's source files under root, and JSON Schemas compiled from them."""

    def __init__(self, root: Path = DATA) -> None:
        self.root = root
        self.version: str = self._read("version.json")["version"]
        dictionary = self._read("dictionary.json")
        self.attributes: dict[str, Any] = dictionary["attributes"]
        self.types: dict[str, Any] = dictionary["types"]["attributes"]
        self.categories: dict[str, Any] = self._read("categories.json")["attributes"]
        self.events = {p.stem: p for p in (root / "events").rglob("*.json")}
        self.profiles: set[str] = set()

    def _read(self, relative: str | Path) -> Any:
        return json.loads((self.root / relative).read_text())

    def _attributes(self, definition: dict[str, Any], find: dict[str, Path]) -> dict[str, Any]:
        """The merged attributes of a class or object, its extends chain included."""
        merged: dict[str, Any] = {}
        parent = definition.get("extends")
        if parent:
            merged = self._attributes(json.loads(find[parent].read_text()), find)
        own = dict(definition.get("attributes", {}))
        for include in own.pop("$include", []):
            included = self._read(include)
            attributes = included.get("attributes", {})
            if included.get("meta") == "profile":  # present only where the profile applies
                attributes = {n: {**a, "profile": included["name"]} for n, a in attributes.items()}
            merged = _merge(merged, attributes)
        return _merge(merged, own)

    def _objects(self) -> dict[str, Path]:
        return {p.stem: p for p in (self.root / "objects").glob("*.json")}

    def _type(self, name: str) -> dict[str, Any]:
        """A dictionary scalar type, resolved down to its base."""
        if name in _SCALARS:
            return dict(_SCALARS[name])
        t = self.types[name]
        out = self._type(t["type"])
        if "regex" in t:
            out["pattern"] = t["regex"]
        if "range" in t:
            out["minimum"], out["maximum"] = t["range"]
        if "max_len" in t:
            out["maxLength"] = t["max_len"]
        return out

    def _property(self, name: str, override: dict[str, Any], defs: dict[str, Any]) -> Any:
        definition = _merge(self.attributes[name], override or {})
        type_name = definition["type"]
        if type_name == "object":
            schema: dict[str, Any] = {"type": "object"}
        elif type_name in _SCALARS or type_name in self.types:
            schema = self._type(type_name)
            enum = definition.get("enum")
            if enum and schema.get("type") == "integer":
                schema = {"type": "integer", "enum": sorted(int(k) for k in enum)}
        else:
            self._object(type_name, defs)
            schema = {"$ref": f"#/$defs/{type_name}"}
        if definition.get("is_array"):
            return {"type": "array", "items": schema}
        return schema

    def _shape(
        self, attributes: dict[str, Any], constraints: dict[str, Any], defs: dict[str, Any]
    ) -> dict[str, Any]:
        attributes = {
            n: a
            for n, a in attributes.items()
            if not a.get("profile") or a["profile"] in self.profiles
        }
        properties = {n: self._property(n, a, defs) for n, a in attributes.items()}
        schema: dict[str, Any] = {
            "type": "object",
            "properties": properties,
            "required": sorted(
                n for n, a in attributes.items() if a.get("requirement") == "required"
            ),
            "additionalProperties": False,
        }
        if constraints.get("at_least_one"):
            schema["anyOf"] = [{"required": [n]} for n in constraints["at_least_one"]]
        if constraints.get("just_one"):
            schema["oneOf"] = [{"required": [n]} for n in constraints["just_one"]]
        return schema

    def _object(self, name: str, defs: dict[str, Any]) -> None:
        if name in defs:
            return
        defs[name] = {}  # placeholder: objects refer to each other
        find = self._objects()
        definition = json.loads(find[name].read_text())
        attributes = self._attributes(definition, find)
        defs[name] = self._shape(attributes, definition.get("constraints", {}), defs)

    def class_schema(self, class_name: str, profiles: Iterable[str] = ()) -> dict[str, Any]:
        """The JSON Schema of one event of the class (e.g. api_activity) that applies the
        profiles named (and so lists them in metadata.profiles)."""
        self.profiles = set(profiles)
        definition = json.loads(self.events[class_name].read_text())
        attributes = self._attributes(definition, self.events)
        category = None
        d: dict[str, Any] = definition
        while category is None:
            category = d.get("category")
            if category is None:
                d = json.loads(self.events[d["extends"]].read_text())
        category_uid = self.categories[category]["uid"]
        class_uid = category_uid * 1000 + definition["uid"]
        defs: dict[str, Any] = {}
        schema = self._shape(attributes, definition.get("constraints", {}), defs)
        activities = schema["properties"]["activity_id"]["enum"]
        schema["properties"]["class_uid"] = {"const": class_uid}
        schema["properties"]["category_uid"] = {"const": category_uid}
        schema["properties"]["type_uid"] = {"enum": [class_uid * 100 + a for a in activities]}
        if self.profiles:
            schema["properties"]["metadata"] = {
                "allOf": [
                    {"$ref": "#/$defs/metadata"},
                    {
                        "required": ["profiles"],
                        "properties": {"profiles": {"contains": {"enum": sorted(self.profiles)}}},
                    },
                ]
            }
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": f"OCSF {self.version} {definition['caption']} ({class_uid})",
            **schema,
            "$defs": defs,
        }

    def reachable_objects(self, class_name: str, profiles: Iterable[str]) -> set[str]:
        """The objects a class's events may hold (to know which files to vendor)."""
        self.profiles = set(profiles)
        defs: dict[str, Any] = {}
        definition = json.loads(self.events[class_name].read_text())
        self._shape(self._attributes(definition, self.events), {}, defs)
        return set(defs)
