"""HOOKLINE_OPERATOR_TOKENS: `name:role:token` entries, plain ones as operators, and each
mistake a sentence that never quotes a token."""

from __future__ import annotations

import pytest

from hookline.config import OperatorToken, SettingsError, load_settings

VIEWER = "viewer-token-of-32-bytes-0000001"
OPERATOR = "operator-token-of-32-bytes-00001"
PLAIN = "plain-token-of-32-bytes-00000001"


def tokens(value: str) -> tuple[OperatorToken, ...]:
    return load_settings({"HOOKLINE_OPERATOR_TOKENS": value}).operator_tokens


def test_named_entries_carry_their_name_and_role() -> None:
    assert tokens(f"ana:viewer:{VIEWER}, ops-bot:operator:{OPERATOR}") == (
        OperatorToken("ana", "viewer", VIEWER), OperatorToken("ops-bot", "operator", OPERATOR))


def test_plain_entries_keep_working_as_operators_named_by_their_place() -> None:
    assert tokens(f"ana:viewer:{VIEWER},{PLAIN}") == (
        OperatorToken("ana", "viewer", VIEWER), OperatorToken("token-2", "operator", PLAIN))


def test_a_token_after_its_role_may_hold_colons() -> None:
    assert tokens(f"ana:operator:{OPERATOR}:x")[0].token == f"{OPERATOR}:x"


def test_an_operator_may_do_what_a_viewer_may_and_not_the_other_way() -> None:
    viewer, operator = OperatorToken("v", "viewer", VIEWER), OperatorToken("o", "operator", PLAIN)
    assert operator.may("operator")
    assert operator.may("viewer")
    assert viewer.may("viewer")
    assert not viewer.may("operator")


def test_a_token_is_never_shown_by_repr() -> None:
    shown = repr(tokens(f"ana:viewer:{VIEWER},{PLAIN}"))
    assert VIEWER not in shown
    assert PLAIN not in shown
    assert "'ana'" in shown


@pytest.mark.parametrize(("value", "sentence"), [
    (f"ana:admin:{OPERATOR}", "must be name:role:token with a role of viewer or operator"),
    (f"ana:Viewer:{OPERATOR}", "must be name:role:token with a role of viewer or operator"),
    (f"{PLAIN}:{OPERATOR}", "must be name:role:token with a role of viewer or operator"),
    (f":operator:{OPERATOR}", "needs a name of 1 to 64 letters"),
    (f"  :viewer:{OPERATOR}", "needs a name of 1 to 64 letters"),
    (f"a b:viewer:{OPERATOR}", "needs a name of 1 to 64 letters"),
    ("ana:operator:", "has no token after its role"),
    ("ana:operator:      ", "has no token after its role"),
    ("ana:operator:short-token", "must hold tokens of at least 16 bytes each"),
    (f"ana:viewer:{VIEWER},ana:operator:{OPERATOR}", "same name to two entries"),
    (f"ana:viewer:{VIEWER},bob:operator:{VIEWER}", "same token to two entries"),
    (f"{PLAIN},token-1:viewer:{VIEWER}", "same name to two entries"),
])
def test_a_bad_entry_stops_with_a_sentence_that_quotes_no_token(value: str,
                                                                 sentence: str) -> None:
    with pytest.raises(SettingsError) as raised:
        tokens(value)
    message = str(raised.value)
    assert message.startswith("HOOKLINE_OPERATOR_TOKENS")
    assert sentence in message
    for secret in (VIEWER, OPERATOR, PLAIN, "short-token", "admin", "Viewer"):
        assert secret not in message


def test_a_well_known_token_is_refused_behind_a_name_too() -> None:
    with pytest.raises(SettingsError, match="well-known development value"):
        tokens("ana:operator:hookline-dev-Xq3v9QmB2s8LkPz1RtY4uWcE")
    found = load_settings({"HOOKLINE_ENV": "development", "HOOKLINE_OPERATOR_TOKENS":
                           "ana:operator:hookline-dev-Xq3v9QmB2s8LkPz1RtY4uWcE"})
    assert found.operator_tokens[0].name == "ana"
