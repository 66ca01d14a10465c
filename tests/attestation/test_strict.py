"""The strict decoders refuse what the formats must never see, with the exception their callers catch."""

from __future__ import annotations

import pytest

from attestation.strict import strict_json


@pytest.mark.parametrize("text, detail", [
    ('{"a": 1, "a": 2}', "appears more than once"),
    ('{"a": NaN}', "NaN is not JSON"),
    ("[" * 100_000, "nested too deeply"),
    (b'{"a":' * 100_000, "nested too deeply"),
])
def test_strict_json_refusals_are_value_errors(text, detail):
    with pytest.raises(ValueError, match=detail):
        strict_json(text)


def test_strict_json_accepts_plain_json():
    assert strict_json(b'{"a": [1, {"b": null}]}') == {"a": [1, {"b": None}]}
