"""The inspection service without HTTP: concurrent inspections share the model's forward passes,
and each still gets the findings of its own image.

.venv/bin/python -m pytest -q tests/apps/industrial_qc/test_service.py
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from apps.industrial_qc.service import QCService
from apps.industrial_qc.settings import QCSettings


def test_concurrent_inspections_share_a_forward_and_keep_their_own_findings(
    tmp_path, tiny_qc_model, neu_images
):
    service = QCService.start(
        QCSettings(
            database=f"sqlite:///{tmp_path / 'qc.db'}", model=str(tiny_qc_model), images=str(tmp_path / "im")
        )
    )
    parts = [(p.name, p.read_bytes()) for p in neu_images[:4]]
    alone = [service.inspect([part], line_id="L1", station_id="S1")[0] for part in parts]
    assert len({round(a["pred_score"], 4) for a in alone}) > 1  # the images differ to the model

    inspector = service.inspector
    assert inspector is not None
    forward, sizes, release = inspector.forward, [], threading.Event()

    def counting(images):
        sizes.append(len(images))
        if len(sizes) == 1:
            release.wait(timeout=10)  # hold the first pass while the others queue
        return forward(images)

    inspector.forward = counting
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(service.inspect, [parts[0]], line_id="L1", station_id="S1")
        while not sizes:
            threading.Event().wait(0.01)
        rest = [pool.submit(service.inspect, [part], line_id="L1", station_id="S1") for part in parts[1:]]
        threading.Event().wait(0.3)  # the three others are queued behind the first pass
        release.set()
        together = [future.result(timeout=30)[0] for future in [first, *rest]]
    assert sizes == [1, 3]
    for one, shared in zip(alone, together, strict=True):
        assert shared["filename"] == one["filename"] and shared["defect_class"] == one["defect_class"]
        assert abs(shared["pred_score"] - one["pred_score"]) < 1e-4
