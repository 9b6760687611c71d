"""PHI is found and masked before text is shown or logged; biomedical prose is left alone."""

import pytest

from apps.medical.deid import find_phi, redact
from core_model.datasets import dataset_dir
from core_model.tagging import read_tagged


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Seen by Dr. Anna Berg on 03/04/2024.", "Seen by Dr. [NAME] on [DATE]."),
        ("Patient: John Smith, DOB 12 March 1961.", "Patient: [NAME], DOB [DATE]."),
        ("MRN 12345678; account no. AC-99812", "MRN [ID]; account no. [ID]"),
        ("Call (555) 123-4567 or +44 20 7946 0958.", "Call [PHONE] or [PHONE]."),
        ("Write to j.smith@example.org today.", "Write to [EMAIL] today."),
        ("Lives at 221 Baker Street, London NW1 6XE.", "Lives at [ADDRESS], London [ADDRESS]."),
        ("Admitted 2023-05-01, discharged May 9, 2023.", "Admitted [DATE], discharged [DATE]."),
        ("Referred by Mary O'Neil for review.", "Referred by [NAME] for review."),
    ],
)
def test_each_kind_of_phi_is_masked(text, expected):
    assert redact(text) == expected


def test_spans_do_not_overlap_and_slice_the_text():
    text = "Dr. Anna Berg (anna.berg@clinic.example, 555-123-4567) saw the patient on 1 Jan 2024."
    found = find_phi(text)
    assert [p.kind for p in found] == ["NAME", "EMAIL", "PHONE", "DATE"]
    assert all(a.end <= b.start for a, b in zip(found, found[1:], strict=False))
    assert text[found[0].start : found[0].end] == "Anna Berg"


def test_biomedical_sentences_are_almost_never_touched():
    sentences = [" ".join(s["tokens"]) for s in read_tagged(dataset_dir("ncbi_disease") / "test.tsv")]
    changed = [s for s in sentences if find_phi(s)]
    assert len(changed) / len(sentences) < 0.02, changed[:10]
