"""Measurement 6: offline verification.

* ``fleetledger verify``'s check of one bundle of ``verify_events`` events (digest, chain,
  seq, Merkle root, re-derived totals and intercepts), in events/s, against the floor of
  any verifier: parsing the file and hashing every event's canonical JSON once.
* Signed bundles (DSSE envelopes of demo-sized bundles) verified per second, against raw
  Ed25519 verification of the same signing inputs.

Bundles are built by the real pipeline (in-memory ports) from simulated traffic, so they
are what a worker publishes.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetledger.processors.canonical import canonical_bytes
from fleetledger.processors.core import CoreConfig
from fleetledger.processors.evidence import evidence_files, verify_bundle_bytes, verify_file
from fleetledger.processors.memory import memory_pipeline
from fleetledger.processors.pipeline import SourcePosition
from fleetledger.processors.signing import pae
from fleetledger.producers import MemoryTransport, Recorder
from fleetledger.producers.simulator import simulate

from .common import Figure, Sizes, log


def _bundles(runs: int, seed: int) -> list[dict[str, Any]]:
    async def record() -> list[tuple[str, bytes]]:
        transport = MemoryTransport()
        async with Recorder(transport, linger_ms=None) as rec:
            await simulate(rec, runs=runs, seed=seed)
        return list(transport.messages)

    messages = asyncio.run(record())
    pipe = memory_pipeline()
    out = pipe.handle_many(
        ((v, SourcePosition("bench", 0, i)) for i, (_k, v) in enumerate(messages)),
        datetime.now(UTC),
    )
    return [b.document for b in out.bundles]


def _own_keys(event: dict[str, Any], source: int) -> dict[str, Any]:
    payload = event.get("payload", {})
    name = "key" if event["type"] == "artifact_written" else "artifact_key"
    if isinstance(payload.get(name), str):
        payload = {**payload, name: f"{payload[name]}~{source}"}
    return {**event, "payload": payload}


def _big_bundle(events: int) -> bytes:
    """One run of ``events`` events: simulated events of many runs re-sequenced as one run."""
    from fleetledger.processors.bundle import assemble_encoded
    from fleetledger.processors.canonical import event_hash, genesis, link
    from fleetledger.processors.core import Entry

    template = _bundles(max(4, events // 400), seed=101)
    # artifact keys made unique per source run, so one run's revisions are not read as
    # another's (the approvals check would rightly refuse a changed approved revision)
    pool = [_own_keys(e["event"], i) for i, b in enumerate(template) for e in b["events"][1:-1]]
    first = template[0]["events"][0]["event"]
    last = template[0]["events"][-1]["event"]
    run_id = "run-bench-verify"
    objs = [first] + [pool[i % len(pool)] for i in range(events - 2)] + [last]
    entries = []
    prev = genesis(run_id)
    for seq, src in enumerate(objs):
        obj = {**src, "run_id": run_id, "seq": seq}
        h = event_hash(obj)
        cur = link(prev, h)
        entries.append(Entry(run_id, seq, h.hex(), prev.hex(), cur.hex(), obj))
        prev = cur
    return assemble_encoded(run_id, entries, CoreConfig())[1]


def _hash_floor(data: bytes) -> float:
    started = time.perf_counter()
    bundle = orjson.loads(data)
    for e in bundle["events"]:
        hashlib.sha256(canonical_bytes(e["event"])).digest()
    return time.perf_counter() - started


def _parse_part(part: bytes) -> int:
    import gc

    gc.disable()  # as verify does while it builds the tree
    return len(orjson.loads(part))


def _parse_ceiling(data: bytes, processes: int) -> float:
    """Seconds to parse the events of ``data`` with orjson in ``processes`` forked
    processes, each its share of the array (cut where an item starts), and nothing else:
    no hash, no check, no re-derivation.  No verifier that builds Python objects from the
    file with orjson goes faster on this machine."""
    import multiprocessing

    bundle = orjson.loads(data)
    after = sorted(name for name in bundle if name > "events")
    suffix = b"]" + b"".join(
        b"," + canonical_bytes(k) + b":" + canonical_bytes(bundle[k]) for k in after
    )
    start = data.index(b'"events":[') + len(b'"events":[')
    end = len(data) - len(suffix) - 1  # the "]" of events
    assert data[end:] == suffix + b"}", "the bundle is not canonical"
    share = (end - start) // processes
    cuts = [start]
    for k in range(1, processes):
        cuts.append(data.index(b'},{"entry_hash":"', start + k * share) + 2)
    cuts.append(end + 1)
    parts = [b"[" + data[a : b - 1] + b"]" for a, b in itertools.pairwise(cuts)]
    started = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        counted = sum(pool.map(_parse_part, parts, chunksize=1))
    took = time.perf_counter() - started
    assert counted == len(bundle["events"]), counted
    return took


def run(sizes: Sizes) -> list[Figure]:
    n = sizes.verify_events
    log(f"verify: building a {n:,}-event bundle")
    big = _big_bundle(n)
    cores = os.cpu_count() or 1
    events = Figure(
        "verify.bundle_events",
        f"fleetledger verify, one bundle of {n:,} events, {cores} cores "
        "(vs parse + hash every event)",
        "events/s",
        baseline_name="parse the file + sha256(JCS(event)) of every event",
        target=">= 200,000 events/s",
        target_check=lambda r: r["median"] >= 200_000,
        notes="every check of SPEC 8.3 (contract, chain, seq, Merkle, re-derived members); "
        "the events walked by one forked process per core while the main one re-derives",
    )
    one = Figure(
        "verify.bundle_events_one_process",
        f"fleetledger verify, one bundle of {n:,} events, one process (--jobs 1)",
        "events/s",
        baseline_name="parse the file + sha256(JCS(event)) of every event",
    )
    ceiling = Figure(
        "verify.parse_ceiling",
        f"orjson parse alone of the same {n:,} events, {cores} processes in parallel, "
        "nothing checked (a ceiling for any verifier built on orjson here)",
        "events/s",
        baseline_name="the same parse in one process",
        notes="the file's events array cut where an item starts, one share per process; "
        "the 200,000 events/s target of verify.bundle_events sits above this ceiling "
        "when it reads lower",
    )
    for _ in range(sizes.reps):
        ceiling.add(n / _parse_ceiling(big, cores), n / _parse_ceiling(big, 1))
        for figure, jobs in ((events, None), (one, 1)):
            started = time.perf_counter()
            facts = verify_bundle_bytes(big, jobs=jobs)
            took = time.perf_counter() - started
            assert facts.events == n
            figure.add(n / took, n / _hash_floor(big))

    log(f"verify: signing {sizes.verify_signed} demo bundles")
    key = Ed25519PrivateKey.generate()
    public = key.public_key()
    signed: list[tuple[bytes, bytes]] = []
    for bundle in _bundles(sizes.verify_signed, seed=202)[: sizes.verify_signed]:
        files = dict(evidence_files(bundle, key))
        stem = next(name for name in files if name.endswith(".dsse.json"))
        signed.append((files[stem], files[stem.replace(".dsse.json", ".bundle.json")]))
    envelopes = [orjson.loads(env) for env, _ in signed]
    inputs = [(e, pae(e["payloadType"], _b64(e["payload"]))) for e in envelopes]
    per_s = Figure(
        "verify.signed_bundles",
        f"signed bundles verified per second ({len(signed)} demo-sized DSSE envelopes)",
        "bundles/s",
        baseline_name="Ed25519 verify of the same signing inputs only",
    )
    for _ in range(sizes.reps):
        started = time.perf_counter()
        for env, _bundle in signed:
            verify_file(env, [public], lambda _name: None)
        took = time.perf_counter() - started
        started = time.perf_counter()
        for env, message in inputs:
            public.verify(_b64(env["signatures"][0]["sig"]), message)
        raw = time.perf_counter() - started
        per_s.add(len(signed) / took, len(signed) / raw)
    folder = _folder_figure(signed, key, sizes)
    return [events, one, ceiling, per_s, folder]


def _folder_figure(
    signed: list[tuple[bytes, bytes]], key: Ed25519PrivateKey, sizes: Sizes
) -> Figure:
    """A folder of signed bundles, statements and plain bundles: every core vs one."""
    from fleetledger.processors.verification import verify_paths

    figure = Figure(
        "verify.folder_files",
        f"fleetledger verify FOLDER, {3 * len(signed)} files of {len(signed)} runs, every core",
        "files/s",
        baseline_name="the same folder with --jobs 1",
    )
    public = key.public_key()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for i, (_env, bundle) in enumerate(signed):
            day = root / f"t{i % 5}" / f"{i % 28:02d}"
            day.mkdir(parents=True, exist_ok=True)
            for name, data in evidence_files(orjson.loads(bundle), key, bundle):
                (day / name).write_bytes(data)
        for _ in range(sizes.reps):
            timings = []
            for jobs in (None, 1):
                started = time.perf_counter()
                results = verify_paths([root], [public], jobs=jobs)
                timings.append(time.perf_counter() - started)
                assert all(r.ok for r in results) and len(results) == 3 * len(signed)
            figure.add(len(results) / timings[0], len(results) / timings[1])
    return figure


def _b64(text: str) -> bytes:
    import base64

    return base64.b64decode(text)
