"""Typed contracts: declarations (``api.toml`` or Python), typed proxies, Lua glue.

``Runtime.bind("api.toml", "demo.Greeter@1")`` returns a :class:`TypedProxy` whose
methods take and return Python values; :func:`load_api` reads an ``api.toml``;
:func:`contract`, :func:`function` and :func:`enum` declare the same things in Python;
:func:`generate_lua` writes the guest-side glue (``luaplug codegen``).
"""

from __future__ import annotations

from .apitoml import load_api, parse_api
from .luagen import generate_lua
from .proxy import TypedProxy, bind
from .spec import ApiSpec, ContractSpec, FunctionSpec, ParamSpec, api, contract, enum, function
from .types import PRIMITIVES, EnumType, ScalarType, TypeSpec

__all__ = [
    "PRIMITIVES",
    "ApiSpec",
    "ContractSpec",
    "EnumType",
    "FunctionSpec",
    "ParamSpec",
    "ScalarType",
    "TypeSpec",
    "TypedProxy",
    "api",
    "bind",
    "contract",
    "enum",
    "function",
    "generate_lua",
    "load_api",
    "parse_api",
]
