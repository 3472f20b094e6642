"""The one validation-error message every strict config and artifact uses."""

from __future__ import annotations

from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from em_organisms.errors import describe_validation_error


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Lora(_Strict):
    kind: Literal["lora"] = "lora"
    rank: int = 1


class Full(_Strict):
    kind: Literal["full"] = "full"
    epochs: int = 1


class Item(_Strict):
    name: str
    weight: float = 1.0


class Top(_Strict):
    protocol: Annotated[Lora | Full, Field(discriminator="kind")] = Lora()
    items: list[Item] = []
    by_name: dict[str, Item] = {}


def _message(data: dict) -> str:
    with pytest.raises(ValidationError) as err:
        Top.model_validate(data)
    return describe_validation_error("r.yaml", "thing", err.value, Top)


def test_an_unknown_key_under_a_union_member_lists_that_members_keys() -> None:
    message = _message({"protocol": {"kind": "lora", "rnk": 2}})
    assert (
        message == "r.yaml: invalid thing\n  unknown key 'protocol.rnk'; allowed here: kind, rank"
    )


def test_list_indexes_and_mapping_keys_are_part_of_the_location() -> None:
    message = _message(
        {"items": [{"name": "a"}, {"name": "b", "wieght": 2}], "by_name": {"x": {"weight": "no"}}}
    )
    lines = message.splitlines()
    assert lines[0] == "r.yaml: invalid thing"
    assert "  unknown key 'items.1.wieght'; allowed here: name, weight" in lines
    assert "  by_name.x.name: Field required" in lines
    assert any(
        line.startswith("  by_name.x.weight: Input should be a valid number") for line in lines
    )


def test_an_unknown_top_level_key_lists_the_top_level_keys() -> None:
    message = _message({"itemz": []})
    assert message.endswith("unknown key 'itemz'; allowed here: by_name, items, protocol")
