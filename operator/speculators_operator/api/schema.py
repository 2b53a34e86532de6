"""pydantic models -> structural OpenAPI v3 schemas for CRDs.

A small walker rather than pydantic's JSON Schema: Kubernetes wants every node inline (no $ref), no
`anyOf` for optionals, `x-kubernetes-*` extensions, defaults on objects so nested defaults apply, and
a description on every property (`kubectl explain`).
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types as at
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from speculators_operator.api.base import FreeFormMarker, QuantityMarker

QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)


class SchemaError(TypeError):
    """A model uses a type the generator cannot express structurally."""


def _unwrap(tp: Any, metadata: list[Any]) -> tuple[Any, list[Any]]:
    """Strip Annotated (collecting its metadata) and Optional."""
    while True:
        origin = get_origin(tp)
        if origin is typing.Annotated:
            args = get_args(tp)
            tp, metadata = args[0], [*metadata, *args[1:]]
            continue
        if origin in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) == 1:
                tp = args[0]
                continue
        return tp, metadata


def _apply_constraints(schema: dict[str, Any], metadata: list[Any]) -> None:
    kind = schema.get("type")
    for item in metadata:
        if isinstance(item, at.Ge):
            schema["minimum"] = item.ge
        elif isinstance(item, at.Gt):
            schema["minimum"] = item.gt
            schema["exclusiveMinimum"] = True
        elif isinstance(item, at.Le):
            schema["maximum"] = item.le
        elif isinstance(item, at.Lt):
            schema["maximum"] = item.lt
            schema["exclusiveMaximum"] = True
        elif isinstance(item, at.MinLen | at.MaxLen):
            suffix = {"array": "Items", "object": "Properties"}.get(kind or "", "Length")
            if isinstance(item, at.MinLen):
                schema[f"min{suffix}"] = item.min_length
            else:
                schema[f"max{suffix}"] = item.max_length


def type_schema(tp: Any, metadata: list[Any] | None = None) -> dict[str, Any]:
    """Schema of a Python type (without the field's description/default)."""
    tp, metadata = _unwrap(tp, list(metadata or []))
    if any(isinstance(m, QuantityMarker) for m in metadata):
        schema: dict[str, Any] = {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "maxLength": 64,  # bounds the cost of the CEL rules on quantities
            "x-kubernetes-int-or-string": True,
        }
        return schema
    if any(isinstance(m, FreeFormMarker) for m in metadata):
        return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    origin = get_origin(tp)
    if origin is Literal:
        values = list(get_args(tp))
        if not all(isinstance(v, str) for v in values):
            raise SchemaError(f"only string enums are supported: {tp!r}")
        schema = {"type": "string", "enum": values}
    elif tp is str:
        schema = {"type": "string"}
    elif tp is bool:
        schema = {"type": "boolean"}
    elif tp is int:
        schema = {"type": "integer", "format": "int64"}
    elif tp is float:
        schema = {"type": "number"}
    elif origin is list:
        (item,) = get_args(tp)
        schema = {"type": "array", "items": type_schema(item)}
    elif origin is dict:
        key, value = get_args(tp)
        if key is not str:
            raise SchemaError(f"map keys must be strings: {tp!r}")
        schema = {"type": "object", "additionalProperties": type_schema(value)}
    elif tp is dict:
        schema = {"type": "object"}
    elif isinstance(tp, type) and issubclass(tp, BaseModel):
        schema = model_schema(tp)
    else:
        raise SchemaError(f"unsupported type in a CRD model: {tp!r}")
    _apply_constraints(schema, metadata)
    return schema


def _default_of(field: FieldInfo) -> Any:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined or field.default is None:
        return PydanticUndefined
    else:
        value = field.default
    if isinstance(value, BaseModel):
        dumped = value.model_dump(by_alias=True, exclude_none=True, mode="json")
        return {k: v for k, v in dumped.items() if v != []}  # empty lists are noise in a default
    if isinstance(value, list | dict) and not value:
        return PydanticUndefined  # an empty list/map default is noise in the schema
    return value


def field_schema(name: str, field: FieldInfo) -> dict[str, Any]:
    if not field.description:
        raise SchemaError(f"field {name!r} has no description (kubectl explain needs one)")
    schema = type_schema(field.annotation, list(field.metadata))
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    for key, value in extra.items():
        if key == "x-kubernetes-validations":
            schema[key] = [*schema.get(key, []), *value]
        else:
            schema[key] = value
    if any("isQuantity" in r["rule"] for r in schema.get("x-kubernetes-validations", [])):
        schema.pop("pattern", None)  # the CEL rule says the same with a readable message
    schema["description"] = field.description
    default = _default_of(field)
    if default is not PydanticUndefined:
        schema["default"] = default
    return schema


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        properties[key] = field_schema(name, field)
        if field.is_required():
            required.append(key)
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if model.__doc__:
        schema["description"] = " ".join(model.__doc__.split())
    if required:
        schema["required"] = required
    rules = list(getattr(model, "__cel__", ()))
    if rules:
        schema["x-kubernetes-validations"] = rules
    return schema


def resource_schema(model: type[BaseModel]) -> dict[str, Any]:
    """Schema of a whole custom resource (apiVersion, kind, metadata, spec, status)."""
    schema = model_schema(model)
    # metadata is validated by the API server itself; the CRD schema may only say it is an object.
    schema["properties"]["metadata"] = {"type": "object"}
    for key in ("apiVersion", "kind"):
        schema["properties"][key] = {
            "type": "string",
            "description": schema["properties"][key]["description"],
        }
    schema["required"] = [k for k in schema.get("required", []) if k in ("spec",)]
    return schema


def walk(schema: dict[str, Any], path: str = ""):
    """Yield (path, node) for every schema node (tests use this to check structural rules)."""
    yield path, schema
    for key, sub in (schema.get("properties") or {}).items():
        yield from walk(sub, f"{path}.{key}")
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")
