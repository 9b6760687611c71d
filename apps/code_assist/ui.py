"""The code-assist page: a completion playground, the evaluation reports and acceptance per language.

    streamlit run apps/code_assist/ui.py -- --api http://127.0.0.1:8000
    verticals code ui --api http://127.0.0.1:8000          # the same, through the suite's command
    make run                                               # the API, this page on :8502 and the console

Playground: the file's language and path, the text before and after the cursor; the completion is
shown in place (highlighted between the two), with the repository snippets the prompt used, and
Accept / Dismiss, which the page reports as the editor plugins do (view, select, dismiss events).
Evaluations: the `verticals code eval` reports (pass@k per benchmark and model). Acceptance:
completions served, shown and accepted per language.

It is only a client: it talks to `/code` over HTTP (`client.py`), imports no torch and keeps
nothing but view state. The API URL comes from `--api`, else $VERTICALS_API_URL, else :8000; the
suite's key, if it has one, from `--api-key`, else $VERTICALS_API_KEY.
"""

from __future__ import annotations

import argparse
import html
import os
import sys
import time

import streamlit as st

from apps.code_assist.client import DEFAULT_URL, ApiError, CodeClient
from apps.code_assist.schemas import CompletionOut

LANGUAGES = ("python", "javascript", "typescript", "java", "go", "cpp")
EXAMPLE_PREFIX = 'def mean(values: list[float]) -> float:\n    """The arithmetic mean."""\n    '
EXAMPLE_SUFFIX = "\n\n\nprint(mean([1.0, 2.0, 4.5]))\n"


def api_args(argv: list[str]) -> argparse.Namespace:
    """`--api URL` and `--api-key KEY` (for a suite started with one), read once here."""
    parser = argparse.ArgumentParser(prog="ui.py", add_help=False)
    parser.add_argument("--api", default=os.environ.get("VERTICALS_API_URL", DEFAULT_URL))
    parser.add_argument("--api-key", default=os.environ.get("VERTICALS_API_KEY"))
    return parser.parse_known_args(argv)[0]


@st.cache_resource
def client_for(url: str, api_key: str | None) -> CodeClient:
    return CodeClient(url, api_key=api_key)


def main() -> None:
    st.set_page_config(page_title="Code assist", page_icon=":material/code:", layout="wide")
    args = api_args(sys.argv[1:])
    client = client_for(args.api, args.api_key)
    pages = [
        st.Page(
            lambda: render_playground(client), title="Playground", icon=":material/edit:", url_path="play"
        ),
        st.Page(
            lambda: render_evaluations(client),
            title="Evaluations",
            icon=":material/checklist:",
            url_path="eval",
        ),
        st.Page(
            lambda: render_acceptance(client),
            title="Acceptance",
            icon=":material/monitoring:",
            url_path="stats",
        ),
    ]
    st.navigation(pages).run()


def render_playground(client: CodeClient) -> None:
    st.title("Playground")
    language_column, path_column = st.columns([1, 3])
    language = language_column.selectbox("Language", LANGUAGES)
    filepath = path_column.text_input("File path (repository context leaves this file out)", "playground.py")
    prefix = st.text_area("Before the cursor", EXAMPLE_PREFIX, height=180)
    suffix = st.text_area("After the cursor", EXAMPLE_SUFFIX, height=120)
    if st.button("Complete", type="primary"):
        try:
            started = time.perf_counter()
            with st.spinner("Completing…"):
                completion = client.complete(
                    prefix=prefix, suffix=suffix, language=language, filepath=filepath
                )
            if completion.choices and completion.choices[0].text:  # as editors do: only what is shown
                client.event("view", completion_id=completion.id)
        except ApiError as error:
            st.error(error.message)
            return
        st.session_state.shown = (completion, prefix, suffix, time.perf_counter() - started, time.monotonic())
    if "shown" in st.session_state:
        render_completion(client, *st.session_state.shown)


def render_completion(
    client: CodeClient, completion: CompletionOut, prefix, suffix, seconds, shown_at
) -> None:
    text = completion.choices[0].text if completion.choices else ""
    if text:
        st.caption(f"{len(text)} characters in {seconds * 1000:.0f} ms; the completion is highlighted")
    else:
        st.info("No completion: the model offered nothing that keeps the file valid here.")
    st.html(
        '<pre class="completion" style="white-space: pre-wrap; font-size: 0.85rem; padding: 0.75rem; '
        'border: 1px solid #ddd; border-radius: 0.4rem">'
        f'{html.escape(prefix)}<mark id="completion">{html.escape(text)}</mark>{html.escape(suffix)}</pre>'
    )
    accept, dismiss, _ = st.columns([1, 1, 4])
    # NOTE: callbacks, not `if st.button(...)`: they run before the rerun draws the page, so an
    # answered completion is gone at once instead of staying with buttons that count it twice.
    event = {"client": client, "completion_id": completion.id, "shown_at": shown_at}
    accept.button("Accept", disabled=not text, on_click=_report, kwargs={**event, "kind": "select"})
    dismiss.button("Dismiss", disabled=not text, on_click=_report, kwargs={**event, "kind": "dismiss"})
    snippets = completion.debug_data.snippets if completion.debug_data else None
    with st.expander(f"Repository snippets in the prompt ({len(snippets or [])})"):
        for snippet in snippets or []:
            st.caption(f"{snippet.filepath} (score {snippet.score:.2f})")
            st.code(snippet.body, language=None)


def _report(*, client: CodeClient, kind: str, completion_id: str, shown_at: float) -> None:
    """Accept or Dismiss: the event with the time the completion was on screen, then the
    completion leaves the page."""
    elapsed_ms = int((time.monotonic() - shown_at) * 1000)
    try:
        client.event(kind, completion_id=completion_id, elapsed_ms=elapsed_ms)
    except ApiError as error:
        st.error(error.message)
        return
    st.toast("Accepted." if kind == "select" else "Dismissed.")
    del st.session_state["shown"]


def render_evaluations(client: CodeClient) -> None:
    st.title("Evaluations")
    st.caption("Reports of `verticals code eval`: each sample executed in a sandbox, pass@k unbiased.")
    try:
        reports = client.evaluations()
    except ApiError as error:
        st.error(error.message)
        return
    if not reports:
        st.info("No report yet: run `verticals code eval humaneval --model embedded`.")
        return
    rows = [
        {
            "benchmark": r.benchmark,
            "model": r.model + (f" + {r.adapter}" if r.adapter else ""),
            "problems": r.problems,
            "samples": r.samples,
            "temperature": r.temperature,
            **{k: round(100 * v, 2) for k, v in r.pass_at.items()},
            "when": r.created_at.strftime("%Y-%m-%d %H:%M"),
        }
        for r in reports
    ]
    st.dataframe(rows, hide_index=True, width="stretch")


def render_acceptance(client: CodeClient) -> None:
    st.title("Acceptance")
    try:
        stats = client.stats()
    except ApiError as error:
        st.error(error.message)
        return
    served, shown, accepted = st.columns(3)
    served.metric("Completions served", stats.completions)
    shown.metric("Shown", stats.views)
    rate = "n/a" if stats.acceptance_rate is None else f"{100 * stats.acceptance_rate:.1f}%"
    accepted.metric("Accepted", stats.selects, rate, delta_color="off")
    if not stats.languages:
        st.info(
            "No completion yet: point an editor's Tabby plugin at the suite's `/code`, or use the playground."
        )
        return
    rows = [
        {
            "language": row.language,
            "served": row.completions,
            "shown": row.views,
            "accepted": row.selects,
            "acceptance %": None if row.acceptance_rate is None else round(100 * row.acceptance_rate, 1),
            "mean latency ms": round(row.mean_latency_ms, 1),
        }
        for row in stats.languages
    ]
    st.dataframe(rows, hide_index=True, width="stretch")


if __name__ == "__main__":
    main()
