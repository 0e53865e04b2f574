"""The named statements of sql/queries.sql, and fragments shared between them."""

from __future__ import annotations

from aqueue.store import Q, load_queries


def test_a_fragment_named_in_double_braces_is_put_in_place_without_its_comment():
    text = """-- name: part --
-- what it is for
x AS (SELECT 1)

-- name: whole --
WITH {{part}}
SELECT * FROM x;
"""
    assert load_queries(text)["whole"] == "WITH x AS (SELECT 1)\nSELECT * FROM x;"


def test_both_claims_share_one_lease_and_no_statement_keeps_a_placeholder():
    lease = load_queries(f"-- name: a --\n{Q['claim_lease']}\n-- name: b --\n{{{{a}}}}")["b"]
    assert lease in Q["claim"] and lease in Q["claim_flow"]
    assert not any("{{" in statement for statement in Q.values())
