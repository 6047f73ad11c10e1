"""The official SDK's response TypedDicts as a strict validator: the contract its users code
against, held to every body the deployments tests see."""

from __future__ import annotations

import types
import typing
from typing import Any, NotRequired, get_args, get_origin, get_type_hints

import typing_extensions
from pydantic import ConfigDict, TypeAdapter


def _for_pydantic(tp: Any) -> Any:
    """`tp` with each TypedDict rebuilt as typing_extensions' (pydantic refuses typing's on
    Python 3.11) and closed: a key the SDK does not know is a mismatch too."""
    if typing.is_typeddict(tp):
        fields = {
            name: _for_pydantic(hint)
            if name in tp.__required_keys__
            else NotRequired[_for_pydantic(hint)]
            for name, hint in get_type_hints(tp).items()
        }
        rebuilt = typing_extensions.TypedDict(tp.__name__, fields)  # type: ignore[operator]
        rebuilt.__pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[attr-defined]
        return rebuilt
    origin = get_origin(tp)
    if origin in (list, dict):
        return origin[tuple(_for_pydantic(a) for a in get_args(tp))]
    if origin in (typing.Union, types.UnionType):
        return typing.Union[tuple(_for_pydantic(a) for a in get_args(tp))]  # noqa: UP007
    return tp


def assert_sdk_type(body: Any, typed_dict: Any) -> None:
    """`body` is what the SDK's TypedDict says, strictly: required keys, literals, types."""
    TypeAdapter(_for_pydantic(typed_dict)).validate_python(body, strict=True)
