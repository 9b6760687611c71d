"""The analytics page of the agent console: intent mix, suggestion acceptance, latency over time.

It is a page of `ui.py` (which builds the navigation and the client), not a script of its own:

    streamlit run apps/customer_service/ui.py -- --api http://127.0.0.1:8000   # then "Analytics"

Everything comes from `GET /cs/analytics` over HTTP; it imports no torch and computes nothing
beyond reshaping the answer for the charts.
"""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from apps.customer_service.console_client import ApiError, ApiUnreachable, ConsoleClient
from apps.customer_service.schemas import CountOut, LatencyPointOut


def render_analytics(client: ConsoleClient) -> None:
    st.title("Analytics")
    st.button("Refresh", icon=":material/refresh:", type="tertiary")
    try:
        analytics = client.analytics()
    except ApiError as error:
        st.error(error.sentence(), icon=":material/cloud_off:" if isinstance(error, ApiUnreachable) else None)
        return
    render_acceptance(analytics.suggestions)
    left, right = st.columns(2, gap="large")
    with left:
        st.subheader("Intent mix")
        if analytics.intent_mix:
            st.altair_chart(intent_chart(analytics.intent_mix), width="stretch")
        else:
            st.info("No customer messages yet.")
    with right:
        render_latency("Message latency", analytics.message_latency, "messages")
        render_latency("Draft first token", analytics.draft_first_token, "drafts")


def render_acceptance(suggestions: dict[str, float]) -> None:
    """The contract names the rate `acceptance_rate`; the service sends `rate` (accepted or edited,
    of the suggestions acted on), counts per status ("shown": no action yet) and `total`."""
    rate = next((suggestions[k] for k in ("acceptance_rate", "rate") if k in suggestions), None)
    counts = ("accepted", "edited", "rejected", "shown")
    total = suggestions.get("total", sum(suggestions.get(name, 0) for name in counts))
    columns = st.columns(6)
    columns[0].metric(
        "Acceptance rate",
        "n/a" if rate is None else f"{rate:.0%}",
        help="suggestions the agent accepted or edited, of those accepted, edited or rejected",
    )
    columns[1].metric("Suggestions", f"{total:.0f}")
    labels = ("Accepted", "Edited", "Rejected", "No action yet")
    for column, name, label in zip(columns[2:], counts, labels, strict=True):
        column.metric(label, f"{suggestions.get(name, 0):.0f}")


def render_latency(title: str, points: list[LatencyPointOut], what: str) -> None:
    st.subheader(title)
    if not points:
        st.info(f"No {what} timed yet.")
        return
    st.altair_chart(latency_chart(points), width="stretch")
    st.caption(f"{sum(p.count for p in points)} {what} in {len(points)} time buckets")


def intent_chart(mix: list[CountOut]) -> alt.Chart:
    """Horizontal bars, most frequent first, with whole intent names (Vega cuts them at 180 px)."""
    frame = pd.DataFrame([row.model_dump() for row in mix])
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X("count:Q", title="customer messages"),
            y=alt.Y("name:N", sort="-x", title=None, axis=alt.Axis(labelLimit=400)),
            tooltip=["name", "count"],
        )
    )


def latency_chart(points: list[LatencyPointOut]) -> alt.Chart:
    """P50 and P99 per time bucket; lines with points, so a single bucket still shows."""
    rows = [
        {"time": p.bucket_start, "percentile": name, "ms": value, "count": p.count}
        for p in points
        for name, value in (("P50", p.p50_ms), ("P99", p.p99_ms))
    ]
    return (
        alt.Chart(pd.DataFrame(rows))
        .mark_line(point=True)
        .encode(
            x=alt.X("time:T", title=None),
            y=alt.Y("ms:Q", title="ms"),
            color=alt.Color("percentile:N", title=None),
            tooltip=["time:T", "percentile", alt.Tooltip("ms:Q", format=".0f"), "count"],
        )
    )
