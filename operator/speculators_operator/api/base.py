"""Base model and schema markers shared by the CRD models.

The pydantic models are the single source of truth: the operator parses objects with them and
`api.schema` turns them into the CRDs' structural OpenAPI schemas. Everything the API server must know
(descriptions, defaults, enums, ranges, CEL rules) is declared here, next to the field.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class QuantityMarker:
    """Marks an int-or-string Kubernetes quantity (`100Gi`, `2`, `500m`)."""


class FreeFormMarker:
    """Marks an object kept as-is (x-kubernetes-preserve-unknown-fields): a full schema is unreasonable."""


Quantity = Annotated[int | str, QuantityMarker()]
FreeForm = Annotated[dict[str, Any], FreeFormMarker()]

# The regexes the API server applies through CEL (RE2) and pydantic applies in unit tests.
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"


def re2(pattern: str) -> str:
    """A CEL raw-string literal for an RE2 pattern (raw, so backslashes reach the regex intact)."""
    assert "'" not in pattern
    return f"r'{pattern}'"


def rule(rule: str, message: str, *, field_path: str | None = None, reason: str | None = None) -> dict:
    """One x-kubernetes-validations entry (CEL) with a readable message."""
    out: dict[str, str] = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    if reason:
        out["reason"] = reason
    return out


def positive_quantity_rule(field: str, example: str) -> dict:
    """A size that must be a quantity above zero (a claim of 0 or less is refused by the API server later)."""
    return rule(
        "isQuantity(string(self)) && quantity(string(self)).isGreaterThan(quantity('0'))",
        f"{field} must be a positive quantity such as {example}",
    )


def cel(*rules: dict) -> dict[str, Any]:
    """json_schema_extra for a field carrying CEL rules."""
    return {"x-kubernetes-validations": list(rules)}


class K8sModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown keys ignored (newer servers, pruning)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    # CEL rules on the object itself (cross-field checks); rendered as x-kubernetes-validations.
    __cel__: ClassVar[tuple[dict, ...]] = ()

    def wire(self) -> dict[str, Any]:
        """The object as Kubernetes JSON: camelCase keys, unset optional fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def secret_name_field(description: str, kind: str = "Secret") -> Any:
    """A name of an object of `kind` in the same namespace (the message names the kind)."""
    return Field(
        description=description,
        min_length=1,
        max_length=253,
        json_schema_extra=cel(
            rule(
                f"self.matches({re2(DNS1123_SUBDOMAIN)})",
                f"must be a {kind} name (lowercase DNS-1123 subdomain, e.g. my-{kind.lower()})",
            )
        ),
    )
