"""The defect dashboard: the operators' view of the inspection API. An alert banner for every line
whose failure rate is above its limit; the failure rate over time per line and station; a Pareto
chart of the defect classes; the latest failed parts, each with its overlay (the heat map and the
boxes over the image), class and score, and Confirm / False alarm buttons that post the
operator's verdict; in the sidebar the pass/fail threshold and the lines' limits.

    streamlit run apps/industrial_qc/ui.py -- --api http://127.0.0.1:8000 --refresh 5
    make run                                  # the API, a simulated line replayed into it, this page

It is only a client of `/qc` (`client.py`, httpx): it imports no torch and keeps nothing but view
state. `--refresh N` redraws the board every N seconds (0: only on interaction), so the parts of a
running replay (`replay.py`) show up as they are inspected. The helpers that shape the API's
answers into charts and sentences are plain functions, tested without a browser.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from apps.industrial_qc.client import DEFAULT_URL, QCApiError, QCClient

# the period shown -> (minutes back, minutes per bucket of the rate chart)
PERIODS = {"15 minutes": (15, 1), "1 hour": (60, 5), "8 hours": (480, 30), "24 hours": (1440, 60)}
DEFAULT_LIMIT = 0.2  # a line's limit when the API does not say (it always does)
PARTS_SHOWN = 8
PARTS_PER_ROW = 4
VERDICTS = {"confirmed": "confirmed defect", "false_alarm": "false alarm"}
NEU_CAPTION = (
    "The simulated line replays NEU-DET's test images, and every one of them carries a defect: "
    "there are no good parts, so at a low threshold nearly every part fails and every line runs "
    "near 100%. Raise the threshold to pass the faint defects and watch the rates follow; a "
    "false-alarm rate on good parts cannot be measured with this data."
)


def page_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ui.py", add_help=False)
    parser.add_argument("--api", default=os.environ.get("VERTICALS_API_URL", DEFAULT_URL))
    parser.add_argument("--api-key", default=os.environ.get("VERTICALS_API_KEY"))
    parser.add_argument("--refresh", type=float, default=5, help="seconds between redraws; 0: never")
    return parser.parse_known_args(argv)[0]


# ----------------------------------------------------------------------------- shaping (no Streamlit)


def rate_frame(buckets: list[dict[str, Any]]) -> pd.DataFrame:
    """The rate chart's rows: one per bucket and station, `series` naming the line and station,
    `rate` as a percentage."""
    columns = ["start", "series", "line_id", "station_id", "inspected", "failed", "rate"]
    if not buckets:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(buckets)
    frame["start"] = pd.to_datetime(frame["start"], utc=True)
    frame["series"] = frame["line_id"] + " · " + frame["station_id"]
    frame["rate"] = (frame["rate"] * 100).round(1)
    return frame[columns].sort_values(["series", "start"]).reset_index(drop=True)


def line_totals(buckets: list[dict[str, Any]]) -> pd.DataFrame:
    """Parts inspected and failed per line over the buckets, and the line's failure rate (0..1)."""
    if not buckets:
        return pd.DataFrame(columns=["line_id", "inspected", "failed", "rate"])
    totals = pd.DataFrame(buckets).groupby("line_id", as_index=False)[["inspected", "failed"]].sum()
    totals["rate"] = totals["failed"] / totals["inspected"].where(totals["inspected"] > 0)
    return totals.sort_values("line_id").reset_index(drop=True)


def pareto_frame(classes: list[dict[str, Any]]) -> pd.DataFrame:
    """The Pareto chart's rows, the commonest class first, shares as percentages."""
    frame = pd.DataFrame(classes, columns=["class", "count", "share", "cumulative_share"])
    frame = frame.sort_values("count", ascending=False, kind="stable").reset_index(drop=True)
    frame["share"] = (frame["share"] * 100).round(1)
    frame["cumulative_share"] = (frame["cumulative_share"] * 100).round(1)
    return frame


def alert_sentences(alerts: list[dict[str, Any]], *, window_minutes: int) -> list[str]:
    """One sentence per line whose failure rate is above its limit, the worst line first."""
    above = [a for a in alerts if a["limit"] is not None and a["rate"] > a["limit"]]
    return [
        f"Line {a['line_id']}: {a['rate']:.0%} of its parts failed in the last {window_minutes} min "
        f"({a['failed']} of {a['inspected']}), above its limit of {a['limit']:.0%}."
        for a in sorted(above, key=lambda a: a["rate"] - a["limit"], reverse=True)
    ]


def known_lines(settings: dict[str, Any], buckets: list[dict[str, Any]]) -> list[str]:
    """Every line with a limit set or a part inspected in the period, sorted."""
    return sorted(set(settings.get("line_limits") or {}) | {b["line_id"] for b in buckets})


def line_limits(settings: dict[str, Any], lines: list[str]) -> dict[str, float]:
    """Each line's failure-rate limit: its own if an operator set one, else the default."""
    own = settings.get("line_limits") or {}
    return {line: float(own.get(line, settings.get("default_line_limit", DEFAULT_LIMIT))) for line in lines}


def verdict_text(feedback: dict[str, Any] | None) -> str:
    if not feedback:
        return "not reviewed"
    by = f" by {feedback['operator']}" if feedback.get("operator") else ""
    return f"{VERDICTS.get(feedback['verdict'], feedback['verdict'])}{by}"


def part_title(part: dict[str, Any]) -> str:
    at = pd.Timestamp(part["created_at"]).strftime("%H:%M:%S")
    return (
        f"**#{part['inspection_id']}** · {part['line_id']} · {part['station_id']} · {at}  \n"
        f"**{part['defect_class']}** · score **{part['pred_score']:.2f}** · "
        f"{len(part.get('defects') or [])} defect(s)"
    )


# ----------------------------------------------------------------------------- charts


def rate_chart(rates: pd.DataFrame, limits: dict[str, float]) -> alt.LayerChart | alt.FacetChart:
    # about a tick a bucket (vega then picks the bucket's own step), so no two ticks share a label
    ticks = min(12, max(1, rates["start"].nunique() - 1))
    lines = (
        alt.Chart(rates)
        .mark_line(point=True)
        .encode(
            x=alt.X("start:T", title=None, axis=alt.Axis(format="%H:%M", tickCount=ticks)),
            y=alt.Y("rate:Q", title="failed parts %", scale=alt.Scale(domain=[0, 100])),
            color=alt.Color("series:N", title="line · station"),
            tooltip=["series", alt.Tooltip("start:T", format="%H:%M"), "inspected", "failed", "rate"],
        )
    )
    rules = pd.DataFrame([{"line_id": k, "limit": v * 100} for k, v in sorted(limits.items())])
    if rules.empty:
        return alt.layer(lines)
    limit = (
        alt.Chart(rules)
        .mark_rule(strokeDash=[6, 4], color="#d62728")
        .encode(
            y="limit:Q", tooltip=[alt.Tooltip("line_id", title="line"), alt.Tooltip("limit", title="limit %")]
        )
    )
    return alt.layer(lines, limit)


def pareto_chart(pareto: pd.DataFrame) -> alt.LayerChart | alt.FacetChart:
    order = list(pareto["class"])
    base = alt.Chart(pareto).encode(
        x=alt.X("class:N", sort=order, title=None, axis=alt.Axis(labelAngle=-30, labelOverlap=False))
    )
    bars = base.mark_bar(color="#4c78a8").encode(
        y=alt.Y("count:Q", title="defects found"), tooltip=["class", "count", "share"]
    )
    cumulative = base.mark_line(point=True, color="#f58518").encode(
        y=alt.Y("cumulative_share:Q", title="cumulative %", scale=alt.Scale(domain=[0, 100])),
        tooltip=["class", "cumulative_share"],
    )
    return alt.layer(bars, cumulative).resolve_scale(y="independent")


# ----------------------------------------------------------------------------- talking to the API


def fetch(call: Any, *args: Any, **kwargs: Any) -> Any:
    """`call(...)`; on an API error, the error's sentence on the page and the script stops."""
    try:
        return call(*args, **kwargs)
    except QCApiError as error:
        st.error(error.message)
        st.stop()


@st.cache_data(max_entries=256, show_spinner=False)
def overlay_png(api: str, api_key: str | None, inspection_id: Any) -> bytes | None:
    """A part's overlay, fetched once (it never changes); None when the API has none."""
    try:
        return QCClient(api, api_key=api_key).overlay(str(inspection_id))
    except QCApiError:
        return None


def post_verdict(client: QCClient, inspection_id: Any, verdict: str) -> None:
    """A button's callback: posts the operator's verdict and leaves the outcome for the redraw."""
    try:
        client.feedback(str(inspection_id), verdict=verdict, operator="dashboard")  # type: ignore[arg-type]
    except QCApiError as error:
        st.session_state.qc_message = ("error", f"Verdict not stored: {error.message}")
        return
    st.session_state.qc_message = ("success", f"Part #{inspection_id} marked {VERDICTS[verdict]}.")


def save_settings(client: QCClient, lines: list[str]) -> None:
    """The settings form's callback: the threshold and every line's limit in one PUT."""
    limits = {line: st.session_state[f"limit-{line}"] / 100 for line in lines}
    try:
        client.put_settings(threshold=st.session_state.threshold, line_limits=limits)
    except QCApiError as error:
        st.session_state.qc_message = ("error", f"Settings not saved: {error.message}")
        return
    st.session_state.qc_message = (
        "success",
        f"Threshold {st.session_state.threshold:.2f} saved; it applies to the parts inspected from now on.",
    )


# ----------------------------------------------------------------------------- the page's parts


def render_settings(client: QCClient, settings: dict[str, Any], lines: list[str]) -> None:
    limits = line_limits(settings, lines)
    with st.form("settings", border=False):
        st.slider(
            "Threshold (fail when the defect score is at least this)", 0.0, 1.0,
            float(settings["threshold"]), 0.01, key="threshold",
        )  # fmt: skip
        for line in lines:
            st.number_input(
                f"Line {line}: alert above this failure rate (%)", 0.0, 100.0,
                round(100 * limits[line], 1), 1.0, key=f"limit-{line}",
            )  # fmt: skip
        st.form_submit_button("Save settings", type="primary", on_click=save_settings, args=(client, lines))
    st.caption(NEU_CAPTION)


def render_alerts(alerts: list[dict[str, Any]], *, window_minutes: int) -> None:
    sentences = alert_sentences(alerts, window_minutes=window_minutes)
    for sentence in sentences:
        st.error(sentence, icon=":material/warning:")
    if not sentences:
        st.success(f"Every line is within its limit over the last {window_minutes} min.")


def render_figures(totals: pd.DataFrame) -> None:
    if totals.empty:
        return
    columns = st.columns(len(totals))
    for column, row in zip(columns, totals.itertuples(), strict=True):
        rate = "–" if pd.isna(row.rate) else f"{row.rate:.0%}"
        column.metric(
            f"Line {row.line_id}: parts failed", rate, help=f"{row.failed} of {row.inspected} parts"
        )


def render_charts(rates: pd.DataFrame, pareto: pd.DataFrame, limits: dict[str, float]) -> None:
    left, right = st.columns([3, 2])
    left.subheader("Failure rate per line and station")
    if rates.empty:
        left.info("No part inspected in this period yet.")
    else:
        left.altair_chart(rate_chart(rates, limits).properties(height=280), width="stretch")
    right.subheader("Defects of the failed parts, by class")
    if pareto.empty:
        right.info("No failed part in this period yet.")
    else:
        right.altair_chart(pareto_chart(pareto).properties(height=280), width="stretch")


def render_part(client: QCClient, args: argparse.Namespace, part: dict[str, Any]) -> None:
    pid = part["inspection_id"]
    with st.container(border=True, key=f"part-{pid}"):
        png = overlay_png(args.api, args.api_key, pid)
        if png is None:
            st.caption("(no overlay image)")
        else:
            st.image(png, width="stretch")
        st.markdown(part_title(part))
        feedback = part.get("feedback")
        colour = {"confirmed": "red", "false_alarm": "green"}.get(
            feedback["verdict"] if feedback else "", "gray"
        )
        st.markdown(f"Verdict: :{colour}[**{verdict_text(feedback)}**]")
        with st.container(horizontal=True, gap="small"):  # side by side, or wrapped when narrow
            st.button(
                "Confirm", key=f"confirm-{pid}", type="primary", on_click=post_verdict,
                args=(client, pid, "confirmed"), help="the defect is real",
            )  # fmt: skip
            st.button(
                "False alarm", key=f"false-alarm-{pid}", on_click=post_verdict,
                args=(client, pid, "false_alarm"), help="the part is good",
            )  # fmt: skip


def render_parts(client: QCClient, args: argparse.Namespace, parts: list[dict[str, Any]]) -> None:
    st.subheader("Latest failed parts")
    if not parts:
        st.info("No failed part yet.")
        return
    for start in range(0, len(parts), PARTS_PER_ROW):
        for column, part in zip(
            st.columns(PARTS_PER_ROW), parts[start : start + PARTS_PER_ROW], strict=False
        ):
            with column:
                render_part(client, args, part)


def render_board(client: QCClient, args: argparse.Namespace, period: str) -> None:
    """Everything that moves while the line runs: redrawn every `--refresh` seconds."""
    if message := st.session_state.pop("qc_message", None):
        (st.success if message[0] == "success" else st.error)(message[1])
    minutes, bucket = PERIODS[period]
    since = datetime.now(UTC) - timedelta(minutes=minutes)
    settings = fetch(client.settings)
    buckets = fetch(client.rates, bucket_minutes=bucket, since=since)
    render_alerts(fetch(client.alerts, window_minutes=minutes), window_minutes=minutes)
    render_figures(line_totals(buckets))
    limits = line_limits(settings, known_lines(settings, buckets))
    pareto = pareto_frame(fetch(client.pareto, since=since))
    render_charts(rate_frame(buckets), pareto, limits)
    render_parts(client, args, fetch(client.inspections, failed=True, limit=PARTS_SHOWN))


def main() -> None:
    st.set_page_config(page_title="Defect dashboard", page_icon=":material/factory:", layout="wide")
    args = page_args(sys.argv[1:])
    client = QCClient(args.api, api_key=args.api_key)
    st.title("Defect dashboard")
    health = fetch(client.health)
    if health.get("status") != "ok":
        detail = health.get("detail") or health.get("status")
        st.warning(f"No inspection model is served, so no new part is inspected: {detail}")
    settings = fetch(client.settings)
    with st.sidebar:
        period = st.selectbox("Period", list(PERIODS), index=0, key="period")
        minutes, bucket = PERIODS[period]
        since = datetime.now(UTC) - timedelta(minutes=minutes)
        render_settings(
            client, settings, known_lines(settings, fetch(client.rates, bucket_minutes=bucket, since=since))
        )
        st.caption(f"API {args.api}" + (f" · redrawn every {args.refresh:g} s" if args.refresh else ""))
    if args.refresh > 0:
        st.fragment(run_every=args.refresh)(render_board)(client, args, period)
    else:
        render_board(client, args, period)


if __name__ == "__main__":
    main()
