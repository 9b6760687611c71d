"""The medical page for a hospital site: the federation's rounds, the sites taking part, F1 over
rounds, bytes sent, this site's own data (counts only), how to join, and the recogniser to try.

    streamlit run apps/medical/ui.py -- --api http://127.0.0.1:8000 --data /srv/north
    verticals medical ui --data /srv/north                # the same, through the suite's command
    make run                                              # the API, this page on :8503, the others

It is only a client of `/medical` (httpx) plus a read of the site's own folder for its counts; it
imports no torch. Text typed into the recogniser is shown back de-identified only.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import streamlit as st

DEFAULT_URL = "http://127.0.0.1:8000"
EXAMPLE = (
    "Seen by Dr. Anna Berg on 03/04/2024 (MRN 12345678). Her brother has Duchenne muscular dystrophy; "
    "she was tested for the BRCA1 breast cancer susceptibility gene."
)
JOIN = """\
1. **Ask the coordinator for** the federation's CA certificate (`ca.crt`) and the SuperLink's address.
2. **Make the site's key pair** and send only the public half to the coordinator:
   `verticals fed keys keys/ {site}` → `keys/{site}.pub`
3. The coordinator **registers it**: `verticals fed register keys/{site}.pub --name {site} --ca certs/ca.crt`
4. **Start the SuperNode next to the records** (they are read here and never sent):
   `verticals fed supernode --site {site} --data {data} --key keys/{site} --ca ca.crt --superlink HOST:9093`
5. Each round the site receives the current adapter, trains it on its records and sends back
   only adapter and head tensors, its record count and its metrics.
"""


def page_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ui.py", add_help=False)
    parser.add_argument("--api", default=os.environ.get("VERTICALS_API_URL", DEFAULT_URL))
    parser.add_argument("--api-key", default=os.environ.get("VERTICALS_API_KEY"))
    parser.add_argument("--data", type=Path, help="this site's records folder")
    return parser.parse_known_args(argv)[0]


def call(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    """The API's JSON answer; on failure a sentence for the page (st.error) and None."""
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    try:
        response = httpx.request(method, args.api.rstrip("/") + path, headers=headers, timeout=60, **kwargs)
    except httpx.TransportError:
        st.error(f"Cannot reach the suite at {args.api}: start it with `make run`.")
        st.stop()
    if response.is_error:
        detail = (
            response.json().get("detail", response.text)
            if "json" in response.headers.get("content-type", "")
            else response.text
        )
        st.error(f"The suite answered HTTP {response.status_code}: {detail}")
        st.stop()
    return response.json()


@st.cache_data(ttl=60)
def site_summary(data: str) -> dict[str, Any]:
    from apps.medical.sites import load_site, summarize  # reads the folder here, on the site

    site = load_site({"data": data})
    return {"name": site.name, "train": summarize(site.train), "evaluation": summarize(site.evaluation)}


PRIVACY_COLUMN = "ε spent (DP, δ=1e-5)"  # only runs with server-side DP record it
HELD_OUT_COLUMN = "F1 (held-out)"  # only runs whose coordinator holds evaluation records


def rounds_frame(rounds: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for r in rounds:
        server = r["metrics"].get("server", {})
        sites = r["metrics"].get("sites", {})
        rows.append({
            "round": r["round"],
            "sites": ", ".join(r["sites"]),
            "failed sites": r["failures"],
            "records trained": r["examples"],
            HELD_OUT_COLUMN: server.get("f1"),
            "F1 (sites pooled)": sites.get("f1"),
            "MB down": round(r["bytes_down"] / 1e6, 2),
            "MB up": round(r["bytes_up"] / 1e6, 2),
            "seconds": round(r["seconds"], 1),
            "adapter": (r["adapter_version"] or "")[:12],
            PRIVACY_COLUMN: r["metrics"].get("privacy", {}).get("epsilon"),
        })  # fmt: skip
    frame = pd.DataFrame(rows).round({HELD_OUT_COLUMN: 4, "F1 (sites pooled)": 4})
    return frame.drop(columns=[c for c in (HELD_OUT_COLUMN, PRIVACY_COLUMN) if frame[c].isna().all()])


def render_federation(args: argparse.Namespace) -> None:
    answer = call(args, "GET", "/medical/federation")
    run = answer["run"]
    if run is None:
        st.info("No federated run recorded yet. The coordinator starts one with `verticals fed run`.")
        return
    rounds = answer["rounds"]
    done = len(rounds)
    columns = st.columns(4)
    columns[0].metric("Run", f"#{run['id']} · {run['strategy']}")
    columns[1].metric("Rounds", f"{done} / {run['rounds_planned']}")
    columns[2].metric("Sites in the last round", len(rounds[-1]["sites"]) if rounds else 0)
    columns[3].metric("Status", "finished" if run["finished_at"] else "running")
    if not rounds:
        st.info("The run has started; its first round is in progress.")
        return
    frame = rounds_frame(rounds)
    st.subheader("F1 over rounds")
    f1 = frame.set_index("round")[[c for c in (HELD_OUT_COLUMN, "F1 (sites pooled)") if c in frame]]
    st.line_chart(f1, x_label="round", y_label="entity F1 (exact spans)")
    st.subheader("Bytes sent per round (adapter and head tensors only)")
    st.bar_chart(frame.set_index("round")[["MB down", "MB up"]], x_label="round", y_label="MB", stack=False)
    st.subheader("Rounds")
    st.dataframe(frame, hide_index=True, width="stretch")


def render_site(args: argparse.Namespace) -> str:
    st.subheader("This site's records (counts only; the records never leave the site)")
    if args.data is None:
        st.caption("Start the page with `--data FOLDER` to see this site's counts.")
        return "SITE"
    try:
        summary = site_summary(str(args.data))
    except (FileNotFoundError, ValueError) as error:
        st.warning(str(error))
        return "SITE"
    columns = st.columns(3)
    columns[0].metric("Training sentences", summary["train"]["sentences"])
    columns[1].metric("Words", summary["train"]["words"])
    columns[2].metric("Evaluation sentences", summary["evaluation"]["sentences"])
    st.dataframe(
        pd.DataFrame([{"type": k, "mentions": v} for k, v in summary["train"]["entities"].items()]),
        hide_index=True,
    )
    return summary["name"]


def render_try(args: argparse.Namespace) -> None:
    st.subheader("Try the recogniser")
    text = st.text_area("Clinical text", EXAMPLE, key="ner_text", height=100)
    if st.button("Find entities", key="ner_run", type="primary"):
        answer = call(args, "POST", "/medical/ner", json={"text": text})
        st.markdown("**De-identified text**")
        st.code(answer["text_deidentified"], language=None, wrap_lines=True)
        entities = pd.DataFrame(answer["entities"], columns=["label", "text", "start", "end", "score"])
        version = answer["adapter"]["version"][:12]
        st.markdown(f"**{len(entities)} entities** · adapter `{version}` · {answer['latency_ms']:.0f} ms")
        st.dataframe(entities, hide_index=True)


def main() -> None:
    st.set_page_config(
        page_title="Federated medical NER", page_icon=":material/local_hospital:", layout="wide"
    )
    args = page_args(sys.argv[1:])
    st.title("Federated clinical entity recognition")
    render_federation(args)
    site = render_site(args)
    st.subheader("How to join")
    st.markdown(JOIN.format(site=site, data=args.data or "/path/to/records"))
    render_try(args)


main()
