"""Encodes the OpenAPI v2 document as protobuf, the only form kubectl reads it in.

client-go's ``DiscoveryClient.OpenAPISchema`` asks for ``/openapi/v2`` with
``Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf`` and
decodes the body as gnostic's ``openapi_v2.Document``; kubectl's client-side
validation reads nothing else, so a JSON answer ends in "failed to download
openapi". Rather than vendoring gnostic's .proto file and generated code for one
message tree, this writes the protobuf wire format directly, for the messages and
fields that our documents use. Field numbers are those of gnostic's
``openapiv2/OpenAPIv2.proto``. Vendor extensions (``x-kubernetes-*``) travel as
YAML text in ``Any.yaml``, which is how kube-openapi reads them back.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

_VARINT = 0
_LENGTH_DELIMITED = 2


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _message(field: int, body: bytes) -> bytes:
    """A length-delimited field: an embedded message, a string or bytes."""
    return _varint(field << 3 | _LENGTH_DELIMITED) + _varint(len(body)) + body


def _string(field: int, value: str | None) -> bytes:
    # proto3 leaves out empty scalars; readers see "" either way.
    return _message(field, value.encode()) if value else b""


def _strings(field: int, values: Iterable[str]) -> bytes:
    return b"".join(_message(field, v.encode()) for v in values)


def _bool(field: int, value: bool | None) -> bytes:
    return _varint(field << 3 | _VARINT) + b"\x01" if value else b""


def _extensions(field: int, obj: dict[str, Any]) -> bytes:
    """Repeated NamedAny{name=1, value=Any{yaml=2}} for every ``x-`` key."""
    out = b""
    for name, value in obj.items():
        if name.startswith("x-"):
            text = yaml.safe_dump(value, default_flow_style=False, sort_keys=True)
            out += _message(field, _string(1, name) + _message(2, _string(2, text)))
    return out


def encode_schema(schema: dict[str, Any]) -> bytes:
    """openapi_v2.Schema."""
    out = _string(1, schema.get("$ref")) + _string(2, schema.get("format"))
    out += _string(4, schema.get("description"))
    out += _strings(19, schema.get("required", []))
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        out += _message(21, _message(1, encode_schema(extra)))  # AdditionalPropertiesItem.schema
    elif isinstance(extra, bool):
        out += _message(21, _varint(2 << 3 | _VARINT) + (b"\x01" if extra else b"\x00"))
    if "type" in schema:
        out += _message(22, _string(1, schema["type"]))  # TypeItem{repeated value=1}
    if "items" in schema:
        out += _message(23, _message(1, encode_schema(schema["items"])))  # ItemsItem
    if "properties" in schema:
        named = b"".join(
            _message(1, _string(1, name) + _message(2, encode_schema(value)))
            for name, value in schema["properties"].items()
        )
        out += _message(25, named)  # Properties{repeated NamedSchema=1}
    return out + _extensions(31, schema)


def _parameter(param: dict[str, Any]) -> bytes:
    """openapi_v2.ParametersItem, for body, query and path parameters."""
    where = param["in"]
    if where == "body":
        body = _string(1, param.get("description")) + _string(2, param["name"])
        body += _string(3, where) + _bool(4, param.get("required"))
        body += _message(5, encode_schema(param["schema"]))
        return _message(1, _message(1, body))  # ParametersItem.parameter.body_parameter
    common = _bool(1, param.get("required")) + _string(2, where)
    common += _string(3, param.get("description")) + _string(4, param["name"])
    if where == "query":  # QueryParameterSubSchema: type=6, unique_items=20
        sub = common + _string(6, param.get("type")) + _bool(20, param.get("uniqueItems"))
        non_body = _message(3, sub)
    elif where == "path":  # PathParameterSubSchema: type=5, unique_items=19
        sub = common + _string(5, param.get("type")) + _bool(19, param.get("uniqueItems"))
        non_body = _message(4, sub)
    else:
        raise ValueError(f"parameters in {where!r} are not encoded")
    return _message(1, _message(2, non_body))  # ParametersItem.parameter.non_body_parameter


def _operation(op: dict[str, Any]) -> bytes:
    """openapi_v2.Operation."""
    out = _strings(1, op.get("tags", [])) + _string(3, op.get("description"))
    out += _string(5, op.get("operationId"))
    out += _strings(6, op.get("produces", [])) + _strings(7, op.get("consumes", []))
    out += b"".join(_message(8, _parameter(p)) for p in op.get("parameters", []))
    codes = b""
    for code, response in op.get("responses", {}).items():
        value = _string(1, response.get("description"))
        if "schema" in response:
            value += _message(2, _message(1, encode_schema(response["schema"])))  # SchemaItem
        # NamedResponseValue{name=1, value=ResponseValue{response=1}}
        codes += _message(1, _string(1, code) + _message(2, _message(1, value)))
    out += _message(9, codes)
    out += _strings(10, op.get("schemes", []))
    return out + _extensions(13, op)


_METHODS = {"get": 2, "put": 3, "post": 4, "delete": 5, "options": 6, "head": 7, "patch": 8}


def _path_item(item: dict[str, Any]) -> bytes:
    out = b""
    for method, field in _METHODS.items():
        if method in item:
            out += _message(field, _operation(item[method]))
    out += b"".join(_message(9, _parameter(p)) for p in item.get("parameters", []))
    return out + _extensions(10, item)


def encode_document(doc: dict[str, Any]) -> bytes:
    """openapi_v2.Document for a Swagger 2.0 document built by openapi_paths.py."""
    info = doc.get("info", {})
    out = _string(1, doc.get("swagger"))
    out += _message(2, _string(1, info.get("title")) + _string(2, info.get("version")))
    paths = b"".join(
        _message(2, _string(1, path) + _message(2, _path_item(item)))  # Paths{NamedPathItem=2}
        for path, item in doc.get("paths", {}).items()
    )
    out += _message(8, paths)
    definitions = b"".join(
        _message(1, _string(1, name) + _message(2, encode_schema(schema)))  # NamedSchema
        for name, schema in doc.get("definitions", {}).items()
    )
    return out + _message(9, definitions)
