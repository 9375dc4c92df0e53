"""How long a record sent to an idle consumer takes to arrive, by the consumer's
``fetch_max_wait_ms``: ``python -m bench.fetch_wait [--waits 20 100 500 1500] [--records 40]``.

A broker that answers a fetch as soon as a record is there (Apache Kafka with
``fetch.min.bytes=1``) delivers it within a round trip whatever the wait; one that holds
every fetch for the whole wait delays records by up to that.  This probe starts the test
broker, sends one record every 50 ms to a consumer with each wait in turn, and prints the
median and the largest delay (send -> consumer), which is why the worker and the
projector set ``FLEETLEDGER_FETCH_MAX_WAIT_MS`` instead of their clients' defaults
(Faust: 1500 ms, aiokafka: 500 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Sequence

from .common import broker, log


async def delays(bootstrap: str, wait_ms: int, records: int) -> list[float]:
    """Seconds from send to arrival of ``records`` records, one every 50 ms."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic = f"bench-fetch-wait-{wait_ms}-{time.time_ns()}"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"create")
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            fetch_max_wait_ms=wait_ms,
        )
        await consumer.start()
        try:
            await asyncio.sleep(1.0)  # assigned, positioned at the end, polling
            got: list[float] = []

            async def consume() -> None:
                async for message in consumer:
                    got.append(time.time() - float(message.value or b"0"))
                    if len(got) >= records:
                        return

            reader = asyncio.create_task(consume())
            await asyncio.sleep(0.5)
            for _ in range(records):
                await producer.send_and_wait(topic, str(time.time()).encode())
                await asyncio.sleep(0.05)
            await asyncio.wait_for(reader, 60)
            return got
        finally:
            await consumer.stop()
    finally:
        await producer.stop()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--waits", type=int, nargs="+", default=[20, 100, 500, 1500])
    ap.add_argument("--records", type=int, default=40)
    args = ap.parse_args(argv)
    with broker() as b:
        for wait in args.waits:
            got = asyncio.run(delays(b.bootstrap, wait, args.records))
            log(
                f"fetch_max_wait_ms={wait}: median {statistics.median(got) * 1000:.1f} ms, "
                f"max {max(got) * 1000:.1f} ms over {len(got)} records"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
