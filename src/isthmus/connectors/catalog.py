"""The provider catalog: one validated JSON file per provider in ``providers/``.

A provider file says what a person must give to connect it: the credential fields, which of
them each auth type requires, and a JSON Schema (draft 2020-12) for the integration's config
that a UI can also draw a form from. ``validate_integration`` checks a config and credentials
against that and reports every problem at once as field errors.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from copy import deepcopy
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import SchemaError, ValidationError
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator
from pydantic import ValidationError as ModelError

from isthmus.connectors.config_secrets import secret_errors
from isthmus.connectors.pagination_config import paginator_from_config
from isthmus.domain.contact_mapping import parse_user_mapping
from isthmus.domain.integrations import IntegrationType
from isthmus.errors import ConfigError, FieldError, InvalidInput

FORMAT_CHECKER = FormatChecker()
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token
_DOTTED_PATH = re.compile(r"[^.\s]+(?:\.[^.\s]+)*")


@FORMAT_CHECKER.checks("http-url")
def _is_http_url(value: object) -> bool:
    if not isinstance(value, str):
        return True  # formats only judge strings; "type" reports the rest
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        return False
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


@FORMAT_CHECKER.checks("header-name")
def _is_header_name(value: object) -> bool:
    return not isinstance(value, str) or _HEADER_NAME.fullmatch(value) is not None


@FORMAT_CHECKER.checks("dotted-path")
def _is_dotted_path(value: object) -> bool:
    return not isinstance(value, str) or _DOTTED_PATH.fullmatch(value) is not None


class CredentialField(BaseModel):
    """One credential a provider takes; ``secret`` fields are encrypted and masked."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    label: str
    description: str = ""
    secret: bool = True


class AuthSchemes(BaseModel):
    """Auth types of a provider and the credential fields each one requires."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    default: str
    types: dict[str, list[str]]


class ProviderSpec(BaseModel):
    """One provider as its catalog file describes it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    display_name: str
    category: IntegrationType
    description: str
    credentials: list[CredentialField]
    auth: AuthSchemes
    config_schema: dict[str, Any]

    _validator: Draft202012Validator | None = PrivateAttr(default=None)

    def credential(self, name: str) -> CredentialField | None:
        """The credential field called ``name``, or None if the provider has no such field."""
        return next((field for field in self.credentials if field.name == name), None)

    def secret_fields(self) -> set[str]:
        """Names of the credential fields that must be encrypted and masked."""
        return {field.name for field in self.credentials if field.secret}

    def config_validator(self) -> Draft202012Validator:
        """A validator for ``config_schema`` that knows the custom formats (built once)."""
        if self._validator is None:
            self._validator = Draft202012Validator(
                self.config_schema, format_checker=FORMAT_CHECKER
            )
        return self._validator

    @model_validator(mode="after")
    def _consistent(self) -> ProviderSpec:
        try:
            Draft202012Validator.check_schema(self.config_schema)
        except SchemaError as exc:
            raise ValueError(f"config_schema is not a valid JSON Schema: {exc.message}") from exc
        if self.config_schema.get("type") != "object":
            raise ValueError('config_schema must describe an object ("type": "object")')
        names = [field.name for field in self.credentials]
        if twice := sorted({name for name in names if names.count(name) > 1}):
            raise ValueError(f"credentials listed twice: {', '.join(twice)}")
        if self.auth.default not in self.auth.types:
            raise ValueError(f"auth.default {self.auth.default!r} is not one of auth.types")
        for auth_type, required in self.auth.types.items():
            if unknown := [name for name in required if name not in names]:
                raise ValueError(
                    f"auth type {auth_type!r} requires undeclared credentials: {', '.join(unknown)}"
                )
        # The schema's auth.type and auth.types describe one thing; a drift between them would
        # accept configs whose credentials can never be checked.
        type_schema = _at(self.config_schema, ("properties", "auth", "properties", "type"))
        if "enum" in type_schema and set(type_schema["enum"]) != set(self.auth.types):
            raise ValueError("config_schema auth.type enum differs from auth.types")
        if type_schema.get("default", self.auth.default) != self.auth.default:
            raise ValueError("config_schema auth.type default differs from auth.default")
        return self


class Catalog:
    """The providers isthmus knows, by name."""

    def __init__(self, specs: Iterable[ProviderSpec]) -> None:
        self._specs: dict[str, ProviderSpec] = {}
        for spec in specs:
            if spec.name in self._specs:
                raise ConfigError(f"provider {spec.name!r} is defined twice")
            self._specs[spec.name] = spec

    def get(self, name: str) -> ProviderSpec:
        """The provider called ``name``; an unknown name is the caller's input error."""
        try:
            return self._specs[name]
        except KeyError:
            known = ", ".join(sorted(self._specs))
            raise InvalidInput.field(
                "provider", f"unknown provider {name!r}; known: {known}"
            ) from None

    def all(self) -> list[ProviderSpec]:
        """Every provider, sorted by name."""
        return [self._specs[name] for name in sorted(self._specs)]


def load_catalog(directory: Traversable | None = None) -> Catalog:
    """Read and validate every ``*.json`` provider file (the shipped ones by default).

    Raises ``ConfigError`` naming the file when one is not valid JSON, does not match the
    ``ProviderSpec`` model, or is not named after its provider.
    """
    root = directory if directory is not None else files("isthmus.connectors") / "providers"
    entries = sorted((e for e in root.iterdir() if e.name.endswith(".json")), key=lambda e: e.name)
    return Catalog(_load_spec(entry) for entry in entries)


def _load_spec(entry: Traversable) -> ProviderSpec:
    try:
        raw = json.loads(entry.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"provider file {entry}: cannot be read as JSON: {exc}") from exc
    try:
        spec = ProviderSpec.model_validate(raw)
    except ModelError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc'])) or '(file)'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"provider file {entry}: {problems}") from exc
    if entry.name != f"{spec.name}.json":
        raise ConfigError(f"provider file {entry}: must be named {spec.name}.json")
    return spec


def validate_integration(
    spec: ProviderSpec,
    config: Mapping[str, Any],
    credentials: Mapping[str, object],
    *,
    require_credentials: bool = True,
) -> dict[str, Any]:
    """Check an integration's config and credentials against its provider.

    Returns a copy of ``config`` with the schema's defaults filled in (recursively, for every
    object in ``properties``). Raises ``InvalidInput`` with one ``FieldError`` per problem,
    sorted by path (``config.<dotted path>`` / ``credentials.<name>``). With
    ``require_credentials=False`` (e.g. importing an export that carries no secrets) missing
    credentials are allowed; unknown or malformed ones never are.
    """
    problems = {*_config_errors(spec, config), *_credential_errors(spec, credentials)}
    said = {p.field for p in problems}
    problems.update(e for e in _mapping_errors(config) if e.field not in said)
    if not any(field.startswith("config.pagination") for field in said):
        problems.update(_pagination_errors(config))
    problems.update(e for e in secret_errors(config) if e.field not in said)
    if require_credentials:
        problems.update(_missing_credentials(spec, config, credentials))
    if problems:
        raise _invalid(problems)
    filled = deepcopy(dict(config))
    _fill_defaults(spec.config_schema, filled)
    return filled


def _config_errors(spec: ProviderSpec, config: object) -> Iterator[FieldError]:
    errors = list(spec.config_validator().iter_errors(config))
    # A value of the wrong type also fails its enum, format, ...; only the type error helps.
    mistyped = {tuple(e.absolute_path) for e in errors if e.validator == "type"}
    for error in errors:
        path: list[str | int] = list(error.absolute_path)
        schema_path = list(error.absolute_schema_path)
        if error.validator == "required":
            names = [name for name in error.validator_value if name not in error.instance]
            message = _required_message(spec.config_schema, schema_path, path)
            for name in names:
                yield FieldError(_config_path([*path, name]), message)
        elif error.validator == "additionalProperties" and error.validator_value is False:
            allowed = list(_at(error.schema, ("properties",)))
            expected = f"; expected one of {', '.join(allowed)}" if allowed else ""
            for name in _extras(error.instance, error.schema):
                yield FieldError(_config_path([*path, name]), f"is not a known setting{expected}")
        elif error.validator == "type" or tuple(path) not in mistyped:
            if "propertyNames" in schema_path:
                path.append(error.instance)  # the offending key, not the object holding it
            yield FieldError(_config_path(path), _message(error))


def _mapping_errors(config: object) -> Iterator[FieldError]:
    """The field mapping's keys name contact fields (the schema checks only its shape): a
    typo (``emial``) would otherwise be saved, and fail every sync of the integration."""
    return _block_errors(config, "fieldMapping", parse_user_mapping)


def _pagination_errors(config: object) -> Iterator[FieldError]:
    """The pagination block makes a paginator (what the schema cannot say, such as a page
    size without the parameter to send it in): saved, it would fail every sync."""
    return _block_errors(config, "pagination", paginator_from_config)


def _block_errors(
    config: object, key: str, check: Callable[[Mapping[str, Any]], object]
) -> Iterator[FieldError]:
    """What ``check`` (raising ``InvalidInput`` with fields named from ``key`` on) finds
    wrong with the config's ``key`` object, as config fields."""
    block = config.get(key) if isinstance(config, Mapping) else None
    if not isinstance(block, Mapping):
        return
    try:
        check(block)
    except InvalidInput as exc:
        for error in exc.errors:
            yield FieldError(f"config.{error.field}", error.message)


def _credential_errors(spec: ProviderSpec, credentials: object) -> Iterator[FieldError]:
    if not isinstance(credentials, Mapping):
        yield FieldError("credentials", "must be an object")
        return
    known = [field.name for field in spec.credentials]
    expected = f"expected one of {', '.join(known)}" if known else "it takes none"
    for name, value in credentials.items():
        field = f"credentials.{name}"
        if name not in known:
            yield FieldError(field, f"is not a credential of provider {spec.name!r}; {expected}")
        elif not isinstance(value, str):
            yield FieldError(field, "must be a string")
        elif not value:
            yield FieldError(field, "must not be empty")


def _missing_credentials(
    spec: ProviderSpec, config: Mapping[str, Any], credentials: object
) -> Iterator[FieldError]:
    auth_type = _auth_type(spec, config)
    if auth_type is None or not isinstance(credentials, Mapping):
        return  # the config errors already say what is wrong
    for name in spec.auth.types[auth_type]:
        if name not in credentials:
            yield FieldError(f"credentials.{name}", f"is required for auth type {auth_type!r}")


def _auth_type(spec: ProviderSpec, config: object) -> str | None:
    """The auth type the config selects, or None when the config does not say a valid one."""
    if not isinstance(config, Mapping):
        return None
    auth = config.get("auth", {})
    if not isinstance(auth, Mapping):
        return None
    auth_type = auth.get("type", spec.auth.default)
    return auth_type if isinstance(auth_type, str) and auth_type in spec.auth.types else None


def _invalid(problems: Iterable[FieldError]) -> InvalidInput:
    return InvalidInput.of(sorted(problems, key=lambda e: (e.field, e.message)))


_TYPE_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "object": "an object",
    "array": "an array",
    "null": "null",
}
_FORMAT_MESSAGES = {
    "http-url": "must be an http or https URL",
    "header-name": "must be a valid HTTP header name",
    "dotted-path": "must be a dotted path such as data.items",
}


def _message(error: ValidationError) -> str:
    kind = str(error.validator)
    value: Any = error.validator_value
    if kind == "type":
        types: list[str] = value if isinstance(value, list) else [value]
        return "must be " + " or ".join(_TYPE_NAMES.get(t, t) for t in types)
    if kind == "enum":
        return "must be one of " + ", ".join(map(str, value))
    if kind == "const":
        return f"must be {value!r}"
    if kind == "format":
        return _FORMAT_MESSAGES.get(value, f"must be a valid {value}")
    if kind == "minLength":
        return "must not be empty" if value == 1 else f"must be at least {value} characters long"
    if kind == "maxLength":
        return f"must be at most {value} characters long"
    if kind == "minimum":
        return f"must be at least {value}"
    if kind == "maximum":
        return f"must be at most {value}"
    if kind == "exclusiveMinimum":
        return f"must be greater than {value}"
    if kind == "exclusiveMaximum":
        return f"must be less than {value}"
    if kind == "minItems":
        return f"must have at least {value} item{'' if value == 1 else 's'}"
    if kind == "maxItems":
        return f"must have at most {value} item{'' if value == 1 else 's'}"
    if kind == "uniqueItems":
        return "must not repeat items"
    if kind == "pattern":
        return f"must match the pattern {value}"
    return error.message


def _required_message(
    root: Mapping[str, Any], schema_path: Sequence[str | int], path: Sequence[str | int]
) -> str:
    """'is required', saying when if it comes from ``if: {x: {const: v}}, then: {required}``."""
    if len(schema_path) < 2 or schema_path[-2] != "then":
        return "is required"
    condition = _at(root, (*schema_path[:-2], "if"))
    consts = {
        name: sub["const"]
        for name, sub in _at(condition, ("properties",)).items()
        if isinstance(sub, Mapping) and "const" in sub
    }
    if len(consts) != 1:
        return "is required"
    ((name, const),) = consts.items()
    where = ".".join(str(part) for part in (*path, name))
    return f"is required when {where} is {const!r}"


def _extras(instance: object, schema: object) -> list[str]:
    if not isinstance(instance, Mapping):
        return []
    properties = _at(schema, ("properties",))
    patterns = list(_at(schema, ("patternProperties",)))
    return [
        name
        for name in instance
        if name not in properties and not any(re.search(p, name) for p in patterns)
    ]


def _fill_defaults(schema: Mapping[str, Any], instance: dict[str, Any]) -> None:
    for name, sub in _at(schema, ("properties",)).items():
        if not isinstance(sub, Mapping):
            continue
        if name not in instance and "default" in sub:
            instance[name] = deepcopy(sub["default"])
        if isinstance(instance.get(name), dict):
            _fill_defaults(sub, instance[name])


def _at(node: object, keys: Iterable[str | int]) -> Mapping[str, Any]:
    """The mapping at ``keys`` inside a schema, or an empty one if the path leads elsewhere."""
    for key in keys:
        if isinstance(node, Mapping):
            node = node.get(key)
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            node = node[key]
        else:
            return {}
    return node if isinstance(node, Mapping) else {}


def _config_path(path: Iterable[str | int]) -> str:
    return "config" + "".join(f".{part}" for part in path)
