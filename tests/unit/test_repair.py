"""Values no encoder takes are repaired in place of failing their batch."""

from __future__ import annotations

import json

from glmtrace._internal.repair import int_text, repaired, safe_str, text


def test_lone_surrogates_become_replacement_characters() -> None:
    """Each lone surrogate is U+FFFD; a surrogate pair is joined into its character."""
    assert text("a\udcffb\ud83d\ude00") == "a\ufffdb\U0001f600"
    assert text("plain caf\u00e9") == "plain caf\u00e9"


def test_integers_of_any_size_have_a_bounded_string_form() -> None:
    """Past the interpreter's digits limit the decimal string; past ~10,000 digits only the size."""
    assert int_text(-(10**5000)) == "-1" + "0" * 5000
    assert int_text(2**100_000) == "<integer of 100001 bits>"


def test_repaired_values_serialise() -> None:
    """Nested dicts and lists with bad text, keys and huge integers all become JSON."""

    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no")

    value = {"k\udc80": [10**5000, ("\udcff", 2**64)], (1, 2): Unprintable()}
    out = repaired(value, int64=True)
    json.dumps(out, ensure_ascii=False, default=safe_str).encode("utf-8")
    assert out["k\ufffd"][1] == ("\ufffd", str(2**64))
    assert out["(1, 2)"] is value[(1, 2)]
    assert safe_str(value[(1, 2)]) == "<Unprintable object: str() failed>"
