"""Typed contracts: declarations (``api.toml`` or Python), typed proxies, Lua glue.

``Runtime.bind("api.toml", "demo.Greeter@1")`` returns a :class:`TypedProxy` whose
methods take and return Python values; :func:`load_api` reads an ``api.toml`` (both
polyplugc 0.1.3's dialect and the later one); :func:`contract`, :func:`function` and
:func:`enum` declare the same things in Python; :func:`generate_glue` writes polyplugc's
guest files from a ``bundle.toml`` (``luaplug codegen --bundle``) and :func:`generate_lua`
luaplug's single-file glue (``luaplug codegen --plugin``).
"""

from __future__ import annotations

from .apitoml import load_api, parse_api
from .bundletoml import BundleSpec, load_bundle_toml
from .glue import generate_glue
from .luagen import generate_lua
from .proxy import TypedProxy, bind
from .spec import ApiSpec, ContractSpec, FunctionSpec, ParamSpec, api, contract, enum, function
from .types import PRIMITIVES, EnumType, FieldSpec, ScalarType, StructType, TypeSpec

__all__ = [
    "PRIMITIVES",
    "ApiSpec",
    "BundleSpec",
    "ContractSpec",
    "EnumType",
    "FieldSpec",
    "FunctionSpec",
    "ParamSpec",
    "ScalarType",
    "StructType",
    "TypeSpec",
    "TypedProxy",
    "api",
    "bind",
    "contract",
    "enum",
    "function",
    "generate_glue",
    "generate_lua",
    "load_api",
    "load_bundle_toml",
    "parse_api",
]
