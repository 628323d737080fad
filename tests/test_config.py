"""Tests for rebuy.config: defaults, shipped YAML files, errors that name the key, overrides."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from rebuy.config import (
    CANONICAL_COLUMNS,
    Config,
    ConfigError,
    DataConfig,
    load_config,
    parse_column_overrides,
)

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


def _yaml(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_need_no_file():
    cfg = load_config()
    assert cfg == Config()
    assert cfg.as_of is None and cfg.time_unit == "weeks" and cfg.time_unit_days == 7.0
    assert cfg.data.columns == {} and cfg.data.cancel_prefixes == ["C"] and cfg.data.drop_duplicates is True
    assert load_config(overrides={"time_unit": "days"}).time_unit_days == 1.0


@pytest.mark.parametrize("name", ["default.yaml", "online_retail_ii.yaml"])
def test_shipped_configs_validate(name):
    cfg = load_config(CONFIGS / name)
    assert isinstance(cfg, Config)
    assert set(cfg.data.columns) <= set(CANONICAL_COLUMNS) | {"description", "country", "category"}


def test_default_yaml_equals_builtin_defaults():
    # the YAML documents the defaults; it must not silently change them
    assert load_config(CONFIGS / "default.yaml") == Config()


def test_online_retail_ii_mapping():
    cfg = load_config(CONFIGS / "online_retail_ii.yaml")
    assert cfg.data.columns == {
        "customer_id": "Customer ID", "order_id": "Invoice", "timestamp": "InvoiceDate", "product_id": "StockCode",
        "quantity": "Quantity", "price": "Price", "description": "Description", "country": "Country",
    }
    assert cfg.data.cancel_prefixes == ["C"] and cfg.data.timestamp_format == "%Y-%m-%d %H:%M:%S"


def test_unknown_keys_name_the_key(tmp_path):
    path = _yaml(tmp_path, "time_unit: days\nbogus: 1\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: invalid config: bogus: unknown key"
    path = _yaml(tmp_path, "data:\n  colums: {customer_id: cid}\n", "nested.yaml")
    with pytest.raises(ConfigError, match=r"nested\.yaml: invalid config: data\.colums: unknown key$"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"<defaults>: invalid config: data\.bogus: unknown key"):
        load_config(overrides={"data.bogus": 1})


def test_wrong_types_name_the_key(tmp_path):
    path = _yaml(tmp_path, "time_unit: months\nas_of: someday\ndata:\n  drop_duplicates: maybe\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: invalid config: ")
    for key in ("time_unit: Input should be 'days' or 'weeks'", "as_of: ", "data.drop_duplicates: "):
        assert key in msg
    assert "\n" not in msg
    with pytest.raises(ConfigError, match=r"data\.columns: Input should be a valid dictionary"):
        load_config(overrides={"data.columns": ["customer_id"]})


def test_bad_data_values(tmp_path):
    cases = {
        "data:\n  columns: {cust: x}\n": r"data\.columns: unknown canonical column\(s\) \['cust'\]",
        "data:\n  columns: {customer_id: '  '}\n": r"data\.columns: Value error, column mapping for 'customer_id' is empty",
        "data:\n  timezone: Mars/Base\n": r"data\.timezone: Value error, unknown time zone 'Mars/Base'",
        "data:\n  cancel_prefixes: ['']\n": r"data\.cancel_prefixes: Value error, an empty prefix",
        "data:\n  customer_columns: {shoe_size: s}\n": r"data\.customer_columns: Value error, unknown customer column",
        "data:\n  event_columns: {click: c}\n": r"data\.event_columns: Value error, unknown event column",
        "data:\n  csv_separator: ''\n": r"data\.csv_separator: Value error, must not be empty",
    }
    for i, (text, pattern) in enumerate(cases.items()):
        with pytest.raises(ConfigError, match=pattern):
            load_config(_yaml(tmp_path, text, f"c{i}.yaml"))
    assert DataConfig(timezone="Europe/London").timezone == "Europe/London"


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"missing\.yaml: config file not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_config(_yaml(tmp_path, "data: [unclosed\n", "bad.yaml"))
    with pytest.raises(ConfigError, match=r"list\.yaml: top level must be a mapping"):
        load_config(_yaml(tmp_path, "- a\n- b\n", "list.yaml"))
    assert load_config(_yaml(tmp_path, "", "empty.yaml")) == Config()


def test_overrides_and_columns_merge(tmp_path):
    path = _yaml(tmp_path, "as_of: 2011-12-09\ndata:\n  columns: {customer_id: 'Customer ID', order_id: Invoice}\n")
    cfg = load_config(path, overrides={"time_unit": "days", "as_of": None, "clv.horizon_months": 6},
                      columns={"order_id": "InvoiceNo", "price": "UnitPrice"})
    assert cfg.as_of == dt.date(2011, 12, 9)  # None overrides are ignored
    assert cfg.time_unit == "days" and cfg.clv.horizon_months == 6
    assert cfg.data.columns == {"customer_id": "Customer ID", "order_id": "InvoiceNo", "price": "UnitPrice"}
    assert load_config(path, overrides={"as_of": "2011-01-31"}).as_of == dt.date(2011, 1, 31)
    with pytest.raises(ConfigError, match=r"unknown canonical column\(s\) \['cust'\]"):
        load_config(columns={"cust": "x"})


def test_assignment_is_validated():
    cfg = Config()
    with pytest.raises(ValueError, match="time_unit"):
        cfg.time_unit = "months"
    with pytest.raises(ValueError, match="drop_duplicates"):
        cfg.data.drop_duplicates = "maybe"


def test_parse_column_overrides():
    assert parse_column_overrides(["customer_id=Customer ID", " price = Price "]) == {
        "customer_id": "Customer ID", "price": "Price"}
    assert parse_column_overrides(["order_id=a=b"]) == {"order_id": "a=b"}
    assert parse_column_overrides(None) == {}
    for bad in ["customer_id", "=Customer ID", "customer_id=", "  =  "]:
        with pytest.raises(ConfigError, match=r"--column .*: expected CANONICAL=SOURCE"):
            parse_column_overrides([bad])


def test_overrides_through_null_or_scalar_sections(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("data:\n")  # an empty (null) section still takes --column and dotted overrides
    cfg = load_config(cfg_file, overrides={"data.timezone": "UTC"}, columns={"customer_id": "cid"})
    assert cfg.data.columns == {"customer_id": "cid"} and cfg.data.timezone == "UTC"
    cfg_file.write_text("data: 3\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: invalid config: data: must be a mapping"):
        load_config(cfg_file, columns={"customer_id": "cid"})


def test_no_shop_specific_product_codes_in_the_code_defaults():
    cfg = Config()
    assert cfg.recommend.excluded_products == [] and cfg.recommend.excluded_product_prefixes == []
    assert cfg.data.drop_products == [] and cfg.data.drop_product_prefixes == []


def test_online_retail_ii_lists_its_non_product_codes_and_test_items():
    cfg = load_config(CONFIGS / "online_retail_ii.yaml")
    assert {"POST", "DOT", "M", "BANK CHARGES", "AMAZONFEE"} <= set(cfg.recommend.excluded_products)
    assert cfg.data.drop_product_prefixes == ["TEST"]


def test_wholesale_rule_is_off_by_default_and_on_for_online_retail_ii():
    assert Config().wholesale.rule == "none"
    cfg = load_config(CONFIGS / "online_retail_ii.yaml")
    assert (cfg.wholesale.rule, cfg.wholesale.order_value_multiple) == ("order_value_multiple", 5.0)


def test_lapsed_customers_are_defined_in_the_config():
    oc = Config().offers
    assert oc.lapsed_segments == ["Lost", "Hibernating", "At Risk", "Can't Lose Them"]
    assert oc.lapsed_max_p_purchase_90d is None and "win_back" in oc.lapsed_rules


def test_wholesale_keys_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="wholesale.rule"):
        load_config(_yaml(tmp_path, "wholesale:\n  rule: big_orders\n"))


@pytest.mark.parametrize("rate", ["50", "1e308", "0.25", ".nan", ".inf"])
def test_clv_discount_rate_is_a_bounded_monthly_rate(tmp_path, rate):
    path = _yaml(tmp_path, f"clv:\n  discount_rate: {rate}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{path}: invalid config: clv.discount_rate: ")
    assert "a monthly rate (0.01 = 1% a month) of at most 0.2" in msg


def test_clv_discount_rate_bounds_and_override_text():
    assert load_config(overrides={"clv.discount_rate": 0.2}).clv.discount_rate == 0.2
    assert load_config(overrides={"clv.discount_rate": 0}).clv.discount_rate == 0.0
    with pytest.raises(ConfigError, match=r"clv\.discount_rate: Value error, a monthly rate .* got '50'"):
        load_config(overrides={"clv.discount_rate": "50"})
    with pytest.raises(ConfigError, match=r"clv\.discount_rate: Input should be greater than or equal to 0"):
        load_config(overrides={"clv.discount_rate": -0.01})
    assert "monthly" in Config.model_json_schema()["$defs"]["CLVConfig"]["properties"]["discount_rate"]["description"]
