"""The score-table schema is declared once (rebuy.schema); the README and every producer follow it."""

from pathlib import Path

import pytest

from rebuy.config import Config
from rebuy.schema import OFFER_LOG_TABLE, SCORE_COLUMNS, SCORE_TABLE, column, markdown_table, score_columns

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_score_table_is_the_schema():
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## The score table"):]
    section = section[: section.index("\n## ", 1)]
    assert markdown_table() in section, "README's score table differs from rebuy.schema: paste markdown_table()"


def test_readme_offer_log_table_is_the_schema():
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Did it work?"):]
    section = section[: section.index("\n## ", 1)]
    assert markdown_table(OFFER_LOG_TABLE) in section, "README's offer log table differs: paste markdown_table(OFFER_LOG_TABLE)"


def test_offer_log_shares_the_score_table_meaning_of_its_common_columns():
    shared = {c.name for c in OFFER_LOG_TABLE} & set(SCORE_COLUMNS)
    assert {"customer_id", "offer_type", "group", "deliver", "segment"} <= shared
    assert all(column(c.name).kind == c.kind for c in OFFER_LOG_TABLE if c.name in shared)


def test_column_names_are_unique_and_ordered():
    assert len(set(SCORE_COLUMNS)) == len(SCORE_COLUMNS)
    assert SCORE_COLUMNS[0] == "customer_id"
    assert [c.name for c in SCORE_TABLE] == SCORE_COLUMNS


def test_config_adds_horizon_columns_after_the_fixed_ones():
    cfg = Config.model_validate({"clv": {"horizons_days": [30, 60], "horizon_months": 6}})
    names = [c.name for c in score_columns(cfg)]
    assert names[: len(SCORE_COLUMNS)] == SCORE_COLUMNS
    assert names[len(SCORE_COLUMNS):] == ["expected_purchases_60d", "clv_6m"]
    assert [c.name for c in score_columns(Config())] == SCORE_COLUMNS


def test_unknown_column_is_a_key_error():
    assert column("p_alive").kind == "float"
    with pytest.raises(KeyError):
        column("no_such_column")


def test_offer_and_summary_columns_are_schema_columns():
    from rebuy.offers import OFFER_COLUMNS
    from rebuy.pipeline import SUMMARY_COLUMNS

    for name in [*OFFER_COLUMNS, *SUMMARY_COLUMNS]:
        assert column(name).name == name
