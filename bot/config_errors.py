"""Configuration problems as one clear line each: `ConfigError`, raised by bot/config.py.

`deskhand` catches it in one place (bot/cli.py `main`) and exits 2 with its message, so a
missing tenants file, a misspelt key or a bad `DESKHAND_*` value stops every command before
it does anything, never with a traceback:

    config error: tenants file fixtures/tenants.yml: tenant T_DEMO: unknown key 'approver' (did you mean 'approvers'?)
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError


class ConfigError(Exception):
    """Deskhand's configuration is unusable; the message says where and what, in one line."""


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The pydantic model that the field path `loc` (without its last key) leads into."""
    for key in loc:
        field = model.model_fields.get(str(key)) if isinstance(key, str) else None
        if field is None:
            continue
        inner = next((t for t in _types(field.annotation) if isinstance(t, type) and issubclass(t, BaseModel)), None)
        if inner is None:
            return None
        model = inner
    return model


def _types(annotation: Any) -> list[Any]:
    args = getattr(annotation, "__args__", None)
    return [t for a in args for t in _types(a)] if args else [annotation]


def _suggestion(key: str, model: type[BaseModel] | None) -> str:
    if model is None:
        return ""
    names = [name for name, field in model.model_fields.items()]
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def describe(exc: ValidationError, model: type[BaseModel], *, env_prefix: str = "") -> str:
    """The first problem of a ValidationError, with the nearest valid key for an unknown one."""
    error = exc.errors()[0]
    loc = tuple(error["loc"])
    dotted = ".".join(str(part) for part in loc)
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    if error["type"] == "extra_forbidden":
        return f"unknown key '{dotted}'{_suggestion(str(loc[-1]), _model_at(model, loc[:-1]))}{more}"
    name = f"{env_prefix}{dotted.upper()}" if env_prefix else dotted
    value = error.get("input")
    got = f" (got {value!r})" if isinstance(value, (str, int, float, bool)) else ""
    return f"{name}: {error['msg']}{got}{more}"


def settings_error(exc: ValidationError, settings_model: type[BaseModel]) -> ConfigError:
    return ConfigError(describe(exc, settings_model, env_prefix="DESKHAND_"))


def load_tenants(path: Path, policy_model: type[BaseModel]) -> dict[str, Any]:
    """Read and validate every tenant of a tenants file strictly; any problem is a ConfigError
    naming the file (and the tenant and key when there is one)."""
    where = f"tenants file {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such file (DESKHAND_TENANTS_FILE)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"{where}: not valid YAML{at}: {problem}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("tenants", {}) or {}, dict):
        raise ConfigError(f"{where}: expected a mapping 'tenants:' of tenant id to policy")
    if unknown := sorted(set(raw) - {"tenants"}):
        hint = difflib.get_close_matches(str(unknown[0]), ["tenants"], n=1, cutoff=0.6)
        raise ConfigError(f"{where}: unknown top-level key '{unknown[0]}'"
                          + (f" (did you mean '{hint[0]}'?)" if hint else ""))
    tenants = {}
    for tenant_id, policy in (raw.get("tenants") or {}).items():
        if policy is not None and not isinstance(policy, dict):
            raise ConfigError(f"{where}: tenant {tenant_id}: expected a mapping of settings")
        try:
            tenants[str(tenant_id)] = policy_model(**(policy or {}))
        except ValidationError as exc:
            raise ConfigError(f"{where}: tenant {tenant_id}: {describe(exc, policy_model)}") from None
    return tenants
