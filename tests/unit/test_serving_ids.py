"""The ids the service gives rows sent without any: random version-4 UUIDs, as `uuid.uuid4().hex` writes them."""

from __future__ import annotations

import uuid

from mlops.serving.routes.predict import new_ids


def test_new_ids_are_distinct_uuid4_hex_strings() -> None:
    ids = new_ids(5000)
    assert len(ids) == len(set(ids)) == 5000
    for text in ids:
        parsed = uuid.UUID(hex=text)
        assert parsed.hex == text  # 32 lower-case hex digits, no dashes
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_new_ids_for_one_row_and_for_none() -> None:
    assert len(new_ids(1)) == 1 and uuid.UUID(hex=new_ids(1)[0]).version == 4
    assert new_ids(0) == []
    assert new_ids(3) != new_ids(3)  # drawn afresh every call
