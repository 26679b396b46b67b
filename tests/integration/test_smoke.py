from __future__ import annotations

import pytest

from consumers.engines.fake import FakeEngine
from consumers.local.demo import sample_scans
from consumers.settings import Settings
from producers.publisher import RequestOptions, build_request
from tests.support.kafka import publish_requests, read_outputs
from tests.support.workers import run_burst

pytestmark = pytest.mark.integration


async def test_samples_flow_through_with_fake_engine(settings: Settings) -> None:
    scans = sample_scans()
    await publish_requests(
        settings, [build_request(p, RequestOptions()) for p in scans]
    )
    engine = FakeEngine()
    await run_burst(settings, engine)
    outputs = await read_outputs(settings, len(scans))
    assert {r.document_id for r in outputs.results} == {p.stem for p in scans}
    assert all(r.status.value == "OK" for r in outputs.results)
