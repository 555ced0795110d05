"""faust's own ceiling: a faust worker whose agent does nothing, on the same topics.

    .venv/bin/python bench/faust_noop.py BOOTSTRAP EXPECTED TOPIC [TOPIC ...]

Reads every message of the topics with a fresh group (from the earliest offset) through a faust
agent that only counts (``stream.events()``, auto-acknowledged as faust does by default), on faust's
own fetch loop, and prints one JSON line: messages/s from the first message to the last, and the
process's CPU time (all threads) over that span. bench/aggregator_bench.py runs it on its CDC topics.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    bootstrap, expected, topics = args[0], int(args[1]), args[2:]
    import faust

    from services.kafka_security import faust_kwargs
    from services.settings import KafkaSettings

    app = faust.App(f"noop-{os.getpid()}-{int(time.time())}",
                    **faust_kwargs(KafkaSettings(kafka_bootstrap=bootstrap)),
                    key_serializer="raw", value_serializer="raw", consumer_auto_offset_reset="earliest",
                    web_enabled=False, store="memory://", stream_wait_empty=False,
                    datadir=tempfile.mkdtemp(prefix="faust-noop-"))
    source = app.topic(*topics, key_type=bytes, value_type=bytes)
    seen = {"n": 0, "t0": 0.0, "cpu0": 0.0}
    result = os.fdopen(os.dup(1), "w")

    @app.agent(source, concurrency=1)
    async def count(stream: Any) -> None:
        async for _ in stream.events():
            if not seen["n"]:
                seen["t0"] = time.perf_counter()
                seen["cpu0"] = time.process_time()
            seen["n"] += 1
            if seen["n"] >= expected:
                took = time.perf_counter() - seen["t0"]
                cpu = time.process_time() - seen["cpu0"]
                result.write(json.dumps({"messages": seen["n"], "seconds": round(took, 2),
                                         "messages_per_s": round(seen["n"] / took),
                                         "cpu_seconds": round(cpu, 3)}) + "\n")
                result.flush()
                os._exit(0)

    os.dup2(2, 1)  # faust's own output goes to stderr
    sys.argv = [sys.argv[0], "worker", "-l", "warn"]
    app.main()


if __name__ == "__main__":
    main()
