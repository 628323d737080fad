"""Send lists per offer type x channel (rebuy.exports.write_exports): who is in them, their
columns in words, products by name, money in the shop's currency, stale files removed, a manifest,
and one-line errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from rebuy.errors import OutputError
from rebuy.exports import EXPORT_COLUMNS, MANIFEST_NAME, customers_to_contact, write_exports


def _scores() -> pd.DataFrame:
    rows = [
        # customer, offer, value, channel, group, deliver, products
        ("c1", "win_back", 0.15, "email", "treatment", True, ["P1", "P2"]),
        ("c2", "win_back", 0.10, "email", "treatment", True, ["P3"]),
        ("c3", "win_back", 0.15, "sms", "treatment", True, []),
        ("c4", "win_back", 0.15, "email", "control", False, ["P1"]),  # held out: never exported
        ("c5", "win_back", 0.15, "none", "treatment", False, ["P1"]),  # no consented channel
        ("c6", "none", 0.0, "email", "none", False, []),  # no offer, even with a channel
        ("c7", "loyalty_points", 120.0, "messenger", "treatment", True, ["P2"]),
        ("c8", "referral", 10.0, "email", "treatment", True, []),
        ("c9", "reminder", 0.0, "sms", "treatment", True, ["P9"]),
    ]
    df = pd.DataFrame(rows, columns=["customer_id", "offer_type", "offer_value", "channel", "group", "deliver",
                                     "offer_products"])
    df["offer_reason"] = [f"reason of {c}" for c in df["customer_id"]]
    df["model_run_id"] = "run-1"
    df["scored_at"] = pd.Timestamp("2024-12-31 02:00")
    return df


NAMES = {"P1": "WHITE HANGING HEART T-LIGHT HOLDER", "P2": "JUMBO BAG RED RETROSPOT"}


def test_one_file_per_offer_type_and_channel_of_the_customers_to_contact(tmp_path):
    files = write_exports(_scores(), tmp_path / "out", product_names=NAMES, currency="GBP")
    assert set(files) == {("win_back", "email"), ("win_back", "sms"), ("loyalty_points", "messenger"),
                          ("referral", "email"), ("reminder", "sms")}
    assert {p.name for p in files.values()} == {"win_back_email.csv", "win_back_sms.csv",
                                                 "loyalty_points_messenger.csv", "referral_email.csv", "reminder_sms.csv"}
    win = pd.read_csv(files[("win_back", "email")], dtype=str, keep_default_na=False)
    assert list(win.columns) == list(EXPORT_COLUMNS)
    assert win["customer_id"].tolist() == ["c1", "c2"]  # not the control c4, not c5 without a channel
    assert win.loc[0].tolist() == ["c1", "email", "win-back", "15% off",
                                   "WHITE HANGING HEART T-LIGHT HOLDER; JUMBO BAG RED RETROSPOT", "reason of c1"]
    assert win.loc[1, "products"] == "P3"  # no name known: the id
    points = pd.read_csv(files[("loyalty_points", "messenger")], dtype=str, keep_default_na=False)
    assert points.loc[0, "offer_type"] == "loyalty points" and points.loc[0, "offer_value"] == "120 points"
    referral = pd.read_csv(files[("referral", "email")], dtype=str, keep_default_na=False)
    assert referral.loc[0, "offer_value"] == "£10.00"
    reminder = pd.read_csv(files[("reminder", "sms")], dtype=str, keep_default_na=False)
    assert reminder.loc[0, "offer_value"] == ""


def test_money_without_a_currency_is_a_plain_number_and_other_codes_are_named(tmp_path):
    plain = write_exports(_scores(), tmp_path / "a")[("referral", "email")]
    assert pd.read_csv(plain, dtype=str).loc[0, "offer_value"] == "10.00"
    chf = write_exports(_scores(), tmp_path / "b", currency="CHF")[("referral", "email")]
    assert pd.read_csv(chf, dtype=str).loc[0, "offer_value"] == "CHF 10.00"


def test_the_manifest_counts_each_file_and_names_the_run(tmp_path):
    write_exports(_scores(), tmp_path)
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text(encoding="utf-8"))
    assert manifest["files"]["win_back_email.csv"] == {"offer_type": "win_back", "channel": "email", "customers": 2}
    assert manifest["customers"] == 6 == len(customers_to_contact(_scores()))
    assert manifest["model_run_id"] == "run-1" and manifest["scored_at"].startswith("2024-12-31T02:00")


def test_stale_exports_of_an_earlier_run_are_removed_and_other_files_kept(tmp_path):
    (tmp_path / "vip_sms.csv").write_text("customer_id\nold\n", encoding="utf-8")
    (tmp_path / "notes.txt").write_text("keep me", encoding="utf-8")
    (tmp_path / "campaign.csv").write_text("keep me too", encoding="utf-8")
    write_exports(_scores(), tmp_path)
    assert not (tmp_path / "vip_sms.csv").exists()
    assert (tmp_path / "notes.txt").is_file() and (tmp_path / "campaign.csv").is_file()
    # the next night nobody gets win-back by SMS: its file goes too
    scores = _scores()
    scores.loc[scores["customer_id"] == "c3", "channel"] = "email"
    files = write_exports(scores, tmp_path)
    assert not (tmp_path / "win_back_sms.csv").exists()
    assert sorted(p.name for p in tmp_path.glob("*_*.csv")) == sorted(p.name for p in files.values())
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no temp files


def test_errors_are_one_line_output_errors(tmp_path):
    with pytest.raises(OutputError, match=r"lacks column\(s\) \['channel'\]"):
        write_exports(_scores().drop(columns=["channel"]), tmp_path)
    afile = tmp_path / "file"
    afile.write_text("x", encoding="utf-8")
    with pytest.raises(OutputError, match="exports directory is a file"):
        write_exports(_scores(), afile)
    with pytest.raises(OutputError, match="expected the score table as a DataFrame"):
        write_exports([1, 2], tmp_path)  # type: ignore[arg-type]
    bad = _scores()
    bad.loc[0, "offer_type"] = "Win Back!"
    with pytest.raises(OutputError, match="not a valid export file name"):
        write_exports(bad, tmp_path / "x")
