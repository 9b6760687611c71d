"""The fraud desk: the analysts' dashboard of the finance API. The day's alert queue (the top-k
cards, the budget card precision@k models) with the reasons each was flagged and Confirm fraud /
Dismiss buttons that post the analyst's label; the day's score distribution; the daily fraud
and alert rates; the model's daily AUC, AP and CP@k on the labelled transactions.

    streamlit run apps/finance_risk/ui.py -- --api http://127.0.0.1:8000
    verticals finance ui --api http://127.0.0.1:8000 --port 8504    # the same, through the suite's command
    make run                                 # the API, a day replayed into it, this page on :8504

It is only a client of `/finance` (httpx): it imports no torch and keeps nothing but view state.
`--refresh N` reruns the page every N seconds (0: only on interaction), so a replayed day fills
the queue as it is scored.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import date, timedelta
from typing import Any

import altair as alt
import httpx
import pandas as pd
import streamlit as st

DEFAULT_URL = "http://127.0.0.1:8000"
CARDS_PER_PAGE = 5
HISTORY_DAYS = 30  # the daily charts' period, ending on the chosen day


def page_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ui.py", add_help=False)
    parser.add_argument("--api", default=os.environ.get("VERTICALS_API_URL", DEFAULT_URL))
    parser.add_argument("--api-key", default=os.environ.get("VERTICALS_API_KEY"))
    parser.add_argument("--refresh", type=int, default=10, help="seconds between reruns; 0: never")
    return parser.parse_known_args(argv)[0]


def request(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    return httpx.request(method, args.api.rstrip("/") + path, headers=headers, timeout=60, **kwargs)


def error_of(response: httpx.Response) -> str:
    """The API's error message (`{"error": {"message"}}`), else the body."""
    try:
        return response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return response.text[:300]


def call(args: argparse.Namespace, path: str, **params: Any) -> dict[str, Any]:
    """GET `path`'s JSON; on failure a sentence for the page and the script stops."""
    try:
        response = request(args, "GET", path, params=params)
    except httpx.TransportError:
        st.error(
            f"Cannot reach the finance API at {args.api}: start it with `make run` or `verticals serve`."
        )
        st.stop()
    if response.is_error:
        st.error(f"The API answered HTTP {response.status_code} to {path}: {error_of(response)}")
        st.stop()
    return response.json()


@st.cache_data(ttl=60, show_spinner=False)
def daily_history(api: str, api_key: str | None, end: date, threshold: float, k: int) -> dict[str, Any]:
    """The daily stats of the HISTORY_DAYS days up to `end` (cached a minute: 300k rows are read)."""
    args = argparse.Namespace(api=api, api_key=api_key)
    start = end - timedelta(days=HISTORY_DAYS - 1)
    return call(args, "/finance/daily", start=str(start), end=str(end), threshold=threshold, k=k)


def post_label(args: argparse.Namespace, transaction_id: str, fraud: bool) -> None:
    """A button's callback: posts the analyst's label and leaves the outcome for the next run."""
    body = {"labels": [{"transaction_id": transaction_id, "fraud": fraud, "source": "analyst"}]}
    verdict = "fraud" if fraud else "genuine"
    try:
        response = request(args, "POST", "/finance/labels", json=body)
    except httpx.TransportError:
        st.session_state.desk_message = ("error", f"Cannot reach the finance API at {args.api}.")
        return
    if response.is_error:
        message = f"Label not stored (HTTP {response.status_code}): {error_of(response)}"
        st.session_state.desk_message = ("error", message)
    else:
        st.session_state.desk_message = (
            "success",
            f"Transaction {transaction_id} labelled {verdict} (analyst).",
        )


# ----------------------------------------------------------------------------- the page's parts


def render_day_figures(day: dict[str, Any] | None, queue: dict[str, Any]) -> None:
    columns = st.columns(5)
    columns[0].metric("Scored transactions", f"{queue['scored']:,}")
    alerts = day["alerts"] if day else 0
    columns[1].metric(f"Alerts (score ≥ {queue['threshold']:.2f})", f"{alerts:,}")
    rate = day and day["alert_rate"]
    columns[2].metric("Alert rate", "–" if rate is None else f"{rate:.2%}")
    columns[3].metric("Labelled", f"{day['labelled']:,}" if day else "0")
    fraud_rate = day and day["fraud_rate"]
    columns[4].metric("Known fraud rate", "–" if fraud_rate is None else f"{fraud_rate:.2%}")


def label_text(label: dict[str, Any] | None) -> str:
    if label is None:
        return "unlabelled"
    return f"{'fraud' if label['fraud'] else 'genuine'} ({label['source']})"


def queue_frame(cards: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for card in cards:
        riskiest = card["transactions"][0]
        reasons = (riskiest["reasons"] or {}).get("features", [])
        rows.append({
            "rank": card["rank"], "card": card["customer_id"], "score": round(card["score"], 4),
            "alert": "yes" if card["alert"] else "", "transactions": len(card["transactions"]),
            "top reason": reasons[0]["feature"] if reasons else "", "label": label_text(riskiest["label"]),
        })  # fmt: skip
    return pd.DataFrame(rows)


def render_card(args: argparse.Namespace, card: dict[str, Any]) -> None:
    """One card of the queue: its transactions, why the riskiest was flagged, the two buttons."""
    riskiest = card["transactions"][0]
    tid = riskiest["transaction_id"]
    with st.container(border=True, key=f"card-{card['customer_id']}"):
        head, confirm, dismiss = st.columns([5, 1.6, 1.1], vertical_alignment="center")
        flag = ":red[**alert**]" if card["alert"] else "below the threshold"
        head.markdown(
            f"**#{card['rank']} · card {card['customer_id']}** · score **{card['score']:.3f}** · {flag} · "
            f"transaction {tid}: **{label_text(riskiest['label'])}**"
        )
        confirm.button(
            "Confirm fraud", key=f"confirm-{tid}", type="primary", on_click=post_label,
            args=(args, tid, True), help=f"label {tid}, the card's riskiest transaction, as fraud",
        )  # fmt: skip
        dismiss.button(
            "Dismiss", key=f"dismiss-{tid}", on_click=post_label, args=(args, tid, False),
            help=f"label {tid}, the card's riskiest transaction, as genuine",
        )  # fmt: skip
        transactions = pd.DataFrame([
            {"transaction": t["transaction_id"], "at": pd.Timestamp(t["timestamp"]).strftime("%H:%M:%S"),
             "terminal": t["terminal_id"], "amount": round(t["amount"], 2), "score": round(t["score"], 4),
             "label": label_text(t["label"])}
            for t in card["transactions"]
        ])  # fmt: skip
        st.caption("The card's scored transactions of the day")
        st.dataframe(transactions, hide_index=True, width="stretch")
        middle, right = st.columns(2)  # two tables side by side: three would cut their columns
        reasons = riskiest["reasons"]
        if reasons is None:
            middle.caption("No reasons recorded: scored offline when the store was seeded.")
            return
        features = pd.DataFrame(reasons.get("features", []), columns=["feature", "value", "contribution"])
        middle.caption("Why: the score minus the score with the feature at its training mean")
        middle.dataframe(features.round(3), hide_index=True, width="stretch")
        if events := reasons.get("events"):
            right.caption("The card's earlier transactions the attention weighed most")
            shown = pd.DataFrame([
                {"transaction": e["transaction_id"], "amount": round(e["amount"], 2),
                 "at": pd.Timestamp(e["timestamp"]).strftime("%m-%d %H:%M"), "weight": round(e["weight"], 4)}
                for e in events
            ])  # fmt: skip
            right.dataframe(shown, hide_index=True, width="stretch")


def render_queue(args: argparse.Namespace, queue: dict[str, Any]) -> None:
    """The queue as a table (every card) and, a page at a time, each card to review."""
    cards = queue["cards"]
    st.subheader(f"Alert queue: the top {queue['k']} cards of {queue['day']}")
    if not cards:
        st.info("No scored transaction on this day yet.")
        return
    st.dataframe(queue_frame(cards), hide_index=True, width="stretch", height=280)


def render_review(args: argparse.Namespace, queue: dict[str, Any]) -> None:
    cards = queue["cards"]
    if not cards:
        return
    st.subheader("Review the queue")
    pages = -(-len(cards) // CARDS_PER_PAGE)
    page = st.number_input(
        f"Page ({CARDS_PER_PAGE} cards each, of {pages})",
        min_value=1,
        max_value=pages,
        value=1,
        key="queue_page",
    )
    for card in cards[(page - 1) * CARDS_PER_PAGE : page * CARDS_PER_PAGE]:
        render_card(args, card)


def render_distribution(histogram: dict[str, Any]) -> None:
    st.subheader("Score distribution")
    edges = histogram["edges"]
    rows = []
    for i, total in enumerate(histogram["counts"]):
        fraud, genuine = histogram["fraud"][i], histogram["genuine"][i]
        for kind, count in (("fraud", fraud), ("genuine", genuine), ("unlabelled", total - fraud - genuine)):
            rows.append({"score from": edges[i], "label": kind, "transactions": count})
    chart = (
        alt.Chart(pd.DataFrame(rows))
        .mark_bar()
        .encode(
            x=alt.X("score from:Q", bin=alt.Bin(step=edges[1] - edges[0]), title="score"),
            y=alt.Y("sum(transactions):Q", scale=alt.Scale(type="symlog"), title="transactions (symlog)"),
            color=alt.Color("label:N", scale=alt.Scale(domain=["fraud", "genuine", "unlabelled"],
                                                       range=["#d62728", "#2ca02c", "#9e9e9e"])),
        )
    )  # fmt: skip
    st.altair_chart(chart.properties(height=280), width="stretch")


def render_history(history: dict[str, Any]) -> None:
    """The daily rates and the model's daily quality, side by side."""
    frame = pd.DataFrame(history["days"])
    if frame.empty:
        return
    frame = frame.assign(day=pd.to_datetime(frame["day"])).set_index("day")
    rates, quality = st.columns(2)
    rates.subheader("Daily fraud and alert rates")
    names = {"alert_rate": "alert rate %", "fraud_rate": "known fraud rate %"}
    rates.line_chart((frame[list(names)] * 100).rename(columns=names), y_label="% of transactions")
    k = history["k"]
    quality.subheader(f"The model per day: AUC, AP, CP@{k}")
    names = {"auc": "AUC", "ap": "AP", "cp_at_k": f"CP@{k}"}
    if frame[list(names)].notna().any().any():
        quality.line_chart(frame[list(names)].rename(columns=names), y_label="on the labelled transactions")
    else:
        quality.info("No day of this period has scored transactions labelled both fraud and genuine yet.")


def render_desk(args: argparse.Namespace, day: date, k: int, threshold: float) -> None:
    if message := st.session_state.pop("desk_message", None):
        (st.success if message[0] == "success" else st.error)(message[1])
    queue = call(args, "/finance/alerts", day=str(day), k=k, threshold=threshold)
    today = call(args, "/finance/daily", start=str(day), end=str(day), threshold=threshold, k=k)["days"]
    render_day_figures(today[0] if today else None, queue)
    left, right = st.columns([3, 2])
    with left:
        render_queue(args, queue)
    with right:
        render_distribution(call(args, "/finance/distribution", day=str(day), bins=20))
    render_history(daily_history(args.api, args.api_key, day, threshold, k))
    render_review(args, queue)


def main() -> None:
    st.set_page_config(page_title="Fraud desk", page_icon=":material/credit_card:", layout="wide")
    args = page_args(sys.argv[1:])
    st.title("Fraud desk")
    health = call(args, "/finance/health")
    if health["status"] != "ok":
        st.warning(
            f"No fraud model is served, so nothing new is scored: {health.get('detail', health['status'])}"
        )
    days = [row["day"] for row in reversed(call(args, "/finance/days")["days"])]
    if not days:
        st.info("No transactions stored yet: replay a day with `verticals finance replay` (`make run` does).")
        st.stop()
    with st.sidebar:
        day = date.fromisoformat(st.selectbox("Day", days, index=0, help="the newest day first"))
        k = int(st.number_input("Cards checked per day (k)", min_value=1, max_value=1000, value=100, step=10))
        threshold = st.slider("Alert threshold", 0.0, 1.0, float(health.get("threshold", 0.5)), 0.01)
        st.caption(f"API {args.api}" + (f" · refreshes every {args.refresh} s" if args.refresh else ""))
    if args.refresh > 0:
        st.fragment(run_every=args.refresh)(render_desk)(args, day, k, threshold)
    else:
        render_desk(args, day, k, threshold)


main()
