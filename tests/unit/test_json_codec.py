"""The JSON codecs every connection gets: PostgreSQL's jsonb and json values decode to
what json.loads gives for the same text, and what json.loads refuses fails the same way."""

from __future__ import annotations

import json

import pytest

from aqueue.db import _decode_json, _decode_jsonb, _encode_jsonb

VALUES = [
    {},
    [],
    {"i": 1, "t": 1764600000.123456, "s": "é\u2603\U0001f600", "n": None, "b": True},
    {"nested": {"list": [1, 2.5, "x", [], {}], "deep": [[[{"a": -0.0}]]]}},
    ["a", 1, -2, 3.0e300, 1e-300, False],
    "just a string",
    12345678901234567890123,
    -1.5,
    None,
    {"escapes": 'tab\tnew\nquote"back\\slash/', "ctrl": "\u0001\u001f"},
]


@pytest.mark.parametrize("value", VALUES)
def test_a_jsonb_value_decodes_to_what_json_loads_gives(value):
    data = _encode_jsonb(value)
    assert _decode_jsonb(data) == json.loads(data[1:]) == value


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1}',
        '  {"a": 1}  ',  # a json column keeps the spaces it was given
        "\n[1, 2]\n",
        '"x"',
        "1e400",  # a number too large for a float: inf, as json.loads makes it
        '{"a": 1, "a": 2}',  # a json column keeps duplicate keys: the last wins
    ],
)
def test_json_text_decodes_to_what_json_loads_gives(text):
    assert _decode_json(text.encode()) == json.loads(text)


@pytest.mark.parametrize("text", ['{"a": 1} x', "", "{", "nul", '{"a": 1}}'])
def test_text_that_is_not_one_json_value_fails_as_json_loads_does(text):
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(text)
    with pytest.raises(json.JSONDecodeError) as got:
        _decode_json(text.encode())
    assert str(got.value) == str(expected.value)


def test_a_jsonb_value_in_an_unknown_binary_format_version_is_refused():
    with pytest.raises(ValueError, match="version"):
        _decode_jsonb(b'\x02{"a": 1}')
