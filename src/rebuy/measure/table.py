"""Plain-text views of a :func:`rebuy.measure.measure_uplift` result for the terminal.

Uplift and its interval are shown in percentage points (the response is a probability); the
incremental margin per treated customer in currency; "width" is the adjusted interval's width as
a share of the plain one (below 100% = CUPED narrowed it).
"""

from __future__ import annotations

from typing import Any

_COLUMNS = ("offer", "treat", "control", "resp T", "resp C", "uplift (pts, 95% CI)", "margin/cust", "verdict", "width")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _points(entry: dict[str, Any]) -> str:
    """``+3.1 [+1.0, +5.2]`` in percentage points, or ``-`` without an estimate."""
    if entry.get("uplift") is None:
        return "-"
    ci = entry.get("uplift_ci95")
    text = f"{100 * entry['uplift']:+.1f}"
    return text if not ci or None in ci else f"{text} [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]"


def _money(x: float | None) -> str:
    return "-" if x is None else f"{x:+.2f}"


def _cells(label: str, entry: dict[str, Any]) -> tuple[str, ...]:
    ratio = entry.get("ci_width_ratio")
    return (
        label, f"{entry['treatment']:,}", f"{entry['control']:,}", _pct(entry.get("response_treatment")),
        _pct(entry.get("response_control")), _points(entry), _money(entry.get("incremental_margin_per_customer")),
        entry["verdict"] + ("*" if entry.get("significant_holm") is False and entry["verdict"] != "no effect shown" else ""),
        "-" if ratio is None else f"{100 * ratio:.0f}%",
    )


def _line(cells: tuple[str, ...], widths: list[int]) -> str:
    """Cells padded to ``widths``: labels and verdicts left-aligned, numbers right-aligned."""
    return "  ".join(c.ljust(w) if i in (0, 7) else c.rjust(w)
                     for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()


def format_uplift_table(result: dict[str, Any]) -> str:
    """One line per offer type plus ``overall`` (stratified), aligned in columns, with a header
    stating the window, the as-of day and the pending decisions."""
    rows = [_cells(e["offer_type"], e) for e in result["by_offer"]] + [_cells("overall", result["overall"])]
    widths = [max(len(r[i]) for r in [_COLUMNS, *rows]) for i in range(len(_COLUMNS))]
    head = (f"uplift over {result['window_days']} days after each decision, as of {result['as_of']}: "
            f"{result['decisions_measured']:,} decisions measured, {result['decisions_pending']:,} pending")
    body = [_line(_COLUMNS, widths), "  ".join("-" * w for w in widths), *(_line(r, widths) for r in rows)]
    family = result.get("multiple_testing") or {}
    if any(r[7].endswith("*") for r in rows):
        k = family["offer_types_tested"]
        body.append(f"* not significant after Holm's correction over the {k} offer type{'s' if k != 1 else ''} "
                    f"tested (about {family['expected_chance_verdicts_if_nothing_works']} verdicts are expected by "
                    "chance even if nothing worked): such a harmful type is not switched off")
    return "\n".join([head, *body]) + "\n"


def uplift_summary_rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, text) rows for a short summary: the window, the counts, then one row per offer type
    and ``overall`` with the uplift in points, its interval and the verdict."""
    rows = [
        ("window", f"{result['window_days']} days, as of {result['as_of']}"),
        ("decisions", f"{result['decisions_measured']:,} measured, {result['decisions_pending']:,} pending "
                      f"(of {result['decisions_total']:,})"),
    ]
    vr = result.get("variance_reduction", {})
    if vr.get("median_ci_width_ratio") is not None:
        rows.append(("variance reduction", f"{vr['method'].split(':')[0]}: median interval width "
                                           f"{100 * vr['median_ci_width_ratio']:.0f}% of plain"))
    for entry in [*result["by_offer"], {**result["overall"], "offer_type": "overall"}]:
        text = f"{_points(entry)} pts, {entry['verdict']} (n = {entry['treatment']:,} / {entry['control']:,})"
        rows.append((entry["offer_type"], text + (f"; {entry['note']}" if entry.get("note") else "")))
    return rows
