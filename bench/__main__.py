"""``python -m bench [--smoke] [--only NAME ...] [--out DIR]``: run the benchmark harness.

A full run of every measurement also regenerates the performance table of README.md
(between its ``bench:begin``/``bench:end`` markers) from the results.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

from .common import FULL, SMOKE, Figure, broker, log
from .report import LoadSampler, build, update_readme, write

MEASUREMENTS = (
    "producer",
    "processor",
    "embedded",
    "scaleout",
    "latency",
    "verify",
    "memory",
    "canonical",
    "replay",
    "instrument",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: proves the harness")
    parser.add_argument("--only", nargs="*", choices=MEASUREMENTS, help="run only these")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--reps", type=int, help="repetitions of every measurement (>= 3)")
    parser.add_argument("--latency-rate", type=int, help="events/s offered in the latency run")
    parser.add_argument(
        "--demo-events",
        type=int,
        help="also run `fleetledger demo` with about this many events (0: skip)",
    )
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    if args.reps is not None:
        sizes = dataclasses.replace(sizes, reps=max(1, args.reps))
    if args.latency_rate is not None:
        sizes = dataclasses.replace(sizes, latency_rate=max(1, args.latency_rate))
    if args.demo_events is not None:
        sizes = dataclasses.replace(sizes, demo_events=args.demo_events)
    os.environ["BENCH_SESSION_TIMEOUT_S"] = str(sizes.session_timeout_s)
    wanted = set(args.only or MEASUREMENTS)
    command = "python -m bench" + (" --smoke" if args.smoke else "")
    started = time.perf_counter()
    figures: list[Figure] = []
    skipped: dict[str, str] = {}
    traffic_info: dict[str, dict[str, object]] = {}

    from . import embedded, latency, memory, processor, producer, scaleout
    from .traffic import generate_events, sdk_packed, warmup_fleet

    load = LoadSampler()
    load.start()

    if "canonical" in wanted:
        from . import canonical

        log("canonical JSON")
        figures += canonical.run(sizes)
    if "instrument" in wanted:
        from . import instrument

        log("SDK overhead per recorded model call")
        figures += instrument.run(sizes)
    if "verify" in wanted:
        from . import verify

        log("verification")
        figures += verify.run(sizes)
    if "replay" in wanted:
        from . import replay

        log("replay")
        figures += replay.run(sizes)
    if "embedded" in wanted:
        log("embedded pipeline")
        figures += embedded.run(sizes)
    needs_kafka = wanted & {"producer", "processor", "scaleout", "latency", "memory"}
    if needs_kafka:
        log("generating traffic with the fleet simulator")
        shapes = {
            "few_busy": generate_events("few_busy", sizes.busy_events),
            "many_slow": generate_events("many_slow", sizes.slow_events),
        }
        warm = warmup_fleet(sizes.warmup_runs)
        # many-slow as the SDK's Kafka transport sends it when one process records the
        # fleet at the latency measurement's offered rate
        slow_packed = sdk_packed(shapes["many_slow"], sizes.latency_rate)
        traffic_info["many_slow_packed"] = {
            **slow_packed.describe(),
            "packed_at_events_per_s": sizes.latency_rate,
        }
        log(f"  many_slow_packed: {traffic_info['many_slow_packed']}")
        for name, t in shapes.items():
            traffic_info[name] = t.describe()
            log(f"  {name}: {t.describe()}")
        with broker() as b:
            log(f"broker on {b.bootstrap} (pid {b.pid})")
            if "producer" in wanted:
                figures += producer.run(b.bootstrap, sizes)
            if "processor" in wanted:
                figures += processor.run(
                    b, {**shapes, "many_slow_packed": slow_packed}, warm, sizes
                )
            if "scaleout" in wanted:
                one = next(
                    (f.values for f in figures if f.key == "processor.few_busy.vs_raw"), None
                )
                figures += scaleout.run(b, shapes["few_busy"], warm, sizes, one)
            if "latency" in wanted:
                figures += latency.run(b, shapes["few_busy"], warm, sizes)
            if "memory" in wanted:
                figures += memory.run(b, shapes["many_slow"], warm, sizes)
    if not sizes.demo_events and "embedded" in wanted:
        skipped["fleetledger demo, 1,000,000 events"] = (
            "not run by default (too long for the time budget at the measured end-to-end "
            "rate, see embedded.end_to_end); run `python -m bench --only embedded "
            "--demo-events 1000000`"
        )
    load.stop()
    results = build(
        figures,
        mode="smoke" if args.smoke else "full",
        command=command,
        seconds=time.perf_counter() - started,
        traffic=traffic_info,
        skipped=skipped,
        load=load.summary(),
    )
    js, md = write(results, args.out)
    log(f"wrote {js} and {md} in {time.perf_counter() - started:.0f}s")
    if not args.smoke and not args.only and args.reps is None and args.latency_rate is None:
        readme = update_readme(results)
        if readme is not None:
            log(f"regenerated the performance table of {readme}")
    print(md.read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
