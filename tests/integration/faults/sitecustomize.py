"""Test-only fault injection for aggregator processes: imported at start-up when this directory is on
``PYTHONPATH`` (it shadows the system's sitecustomize, which holds nothing the tests need).

``TN_TEST_FAULT=<kind>:<topic>:<partition>`` reproduces, once, right after faust's table recovery
has resumed the streams (``Recovery.on_recovery_completed``), one of the two ways faust was seen to
leave a partition stuck after a rebalance:

- ``leave-out``: the partition is left out of the fetches (faust's buffer flow control did this);
- ``skip``: the read offset is put 5 records past the committed one, so faust drops the records in
  between as already read and the commits never pass them (a record fetched before a rebalance,
  marked read, never handed to the agent).

Nothing here runs unless the variable is set.
"""

from __future__ import annotations

import os
import sys

_SPEC = os.environ.get("TN_TEST_FAULT")

if _SPEC:
    from faust.tables.recovery import Recovery

    _kind, _topic, _partition = _SPEC.split(":")
    _original = Recovery.on_recovery_completed
    _done: list[object] = []

    async def on_recovery_completed(self, generation_id: int = 0) -> None:  # type: ignore[no-untyped-def]
        await _original(self, generation_id)
        consumer = self.app.consumer
        for tp in consumer.assignment():
            if _done or tp.topic != _topic or tp.partition != int(_partition):
                continue
            _done.append(tp)
            if _kind == "leave-out":
                consumer._active_partitions.discard(tp)
            elif _kind == "skip":
                consumer._read_offset[tp] = (consumer._committed_offset.get(tp) or 0) + 5
            print(f"test fault injected: {_kind} {tp.topic}:{tp.partition}", file=sys.stderr, flush=True)

    Recovery.on_recovery_completed = on_recovery_completed
