"""Red team: the audit log tells auditors (and anyone holding an export) no count of data that was not released.

``result_released`` used to carry each output's number of suppressed cells: an exact count of groups of the
data (on a DP dataset, the number of groups below the noisy threshold), which nobody was meant to receive. One
job grouping by a condition on one person (``when(person_id == N & income > c, 1)``) then had that person's bit
in the log. What the record may say is what the researcher receives anyway: rows released, the result's hash,
the budget charged.
"""

from __future__ import annotations

import json

from saferoom.client import Client
from saferoom.server import SaferoomServer
from tests.support import Deployment


def _released_records(audrey: Client, mark: int) -> list[dict[str, object]]:
    return [r.summary for r in audrey.read_log(after_seq=mark) if r.event == "result_released"]


def test_result_released_holds_no_count_of_what_was_suppressed(server: SaferoomServer, deployment: Deployment) -> None:
    with deployment.client("alice", server.port) as alice, deployment.client("audrey", server.port) as audrey:
        mark = next(audrey.read_log(tail=1)).seq
        job = alice.wait(alice.run_job("small-cells", {}).id, timeout=120)  # by person: everything suppressed
        assert job.state == "succeeded", job.error_message
        result = alice.get_result(job.id)
        (summary,) = _released_records(audrey, mark)
    assert set(summary) == {"result_hash", "outputs", "cells_released", "budget_charged"}
    outputs = summary["outputs"]
    assert isinstance(outputs, list)
    assert all(set(o) == {"name", "kind", "rows"} for o in outputs)
    released_rows = {o.name: (o.table.num_rows if o.table is not None else 1) for o in result.outputs}
    assert {o["name"]: o["rows"] for o in outputs} == released_rows  # exactly what alice received
    assert "suppress" not in json.dumps(summary)
