"""Fuzz `json_steps.loads_in_steps` against `json.loads`: the same value for every text json.loads reads, and an
error (a ValueError) for every text it refuses, whatever the JSON looks like around the levels parsed in steps.
The texts are JSON values of every shape, written with and without whitespace, then some cut or with a byte
flipped; a config message itself is the example that matters most."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from meshlet_contracts import wire
from meshlet_contracts.json_steps import loads_in_steps
from tests.unit.fuzz import fuzz_settings

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)
SNAPSHOT = (
    '{"type": "snapshot", "epoch": "e", "version": 3, "resources": {"workloads": [{"uid": "a", "ips": ["10.0.0.1"]}]}}'
)


@st.composite
def texts(draw: st.DrawFn) -> str:
    value = draw(values)
    text = json.dumps(value, indent=draw(st.sampled_from([None, 0, 2])), ensure_ascii=draw(st.booleans()))
    if draw(st.booleans()):
        text = draw(st.sampled_from(["", " ", "\n\t"])) + text + draw(st.sampled_from(["", " ", "\r\n"]))
    damage = draw(st.sampled_from(["none", "cut", "flip", "append"]))
    if damage == "cut" and text:
        text = text[: draw(st.integers(0, len(text) - 1))]
    elif damage == "flip" and text:
        i = draw(st.integers(0, len(text) - 1))
        text = text[:i] + draw(st.sampled_from(list('{}[],:" x0'))) + text[i + 1 :]
    elif damage == "append":
        text += draw(st.sampled_from([",", "]", "}", " 1", "{}"]))
    return text


def _outcome(parse: Any, text: str) -> tuple[str, Any]:
    try:
        return "value", parse(text)
    except ValueError:
        return "error", None


@fuzz_settings(400)
@given(text=texts(), depth=st.integers(0, 4))
@example(text=SNAPSHOT, depth=3)
@example(text='{"a": [1, 2,]}', depth=3)
@example(text='{"a" 1}', depth=3)
@example(text="[1 2]", depth=3)
@example(text='{"a": 1, "a": 2}', depth=3)
@example(text="{,}", depth=3)
@example(text="[", depth=3)
def test_parsing_in_steps_reads_what_json_loads_reads_and_refuses_what_it_refuses(text: str, depth: int) -> None:
    assert _outcome(lambda t: loads_in_steps(t, depth), text) == _outcome(json.loads, text)


def test_a_config_message_decodes_the_same_either_way() -> None:
    assert wire.decode(SNAPSHOT, in_steps=True) == wire.decode(SNAPSHOT)
    with pytest.raises(wire.WireError, match="not JSON"):
        wire.decode(SNAPSHOT[:-1], in_steps=True)
