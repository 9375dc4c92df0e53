"""The evidence commands end to end: demo --sign, verify, tampering, proofs, export, archive."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from fleetledger.cli.commands import main
from fleetledger.processors.canonical import canonical_bytes

ENV_KEYS = [k for k in os.environ if k.startswith("FLEETLEDGER_")]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for k in ENV_KEYS:
        monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)


def test_demo_sign_verify_tamper_prove(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "generate", "--out", "k/signer"]) == 0
    assert stat.S_IMODE((tmp_path / "k/signer.pem").stat().st_mode) == 0o600
    assert main(["keys", "generate", "--out", "k/other"]) == 0
    assert (
        main(["demo", "--runs", "6", "--seed", "3", "--out", "out", "--sign", "k/signer.pem"]) == 0
    )
    files = sorted((tmp_path / "out").iterdir())
    assert len(files) == 18
    capsys.readouterr()
    paths = [str(p) for p in files]
    assert main(["verify", *paths, "--key", "k/signer.pub.pem"]) == 0
    assert capsys.readouterr().out.count("OK   ") == 18
    # untrusted key, no key at all, nothing to check
    assert main(["verify", *paths, "--key", "k/other.pub.pem"]) == 2
    assert "signature" in capsys.readouterr().out
    assert main(["verify", paths[1]]) == 2
    assert "no trusted key" in capsys.readouterr().out
    assert main(["verify", "out/nothing.json"]) == 2
    assert "cannot be read" in capsys.readouterr().out
    # one changed byte in any file
    for p in files:
        data = p.read_bytes()
        for i in (5, len(data) // 2, len(data) - 2):
            p.write_bytes(data[:i] + bytes([data[i] ^ 0x02]) + data[i + 1 :])
            assert main(["verify", str(p), "--key", "k/signer.pub.pem"]) == 2, (p, i)
            out = capsys.readouterr().out
            assert out.startswith(f"FAIL {p}: ") and ("found" in out or "not" in out)
        p.write_bytes(data)
    # a proof for every seq of a bundle verifies; a changed event does not
    bundle_file = next(p for p in files if p.name.endswith(".bundle.json"))
    bundle = json.loads(bundle_file.read_bytes())
    digest = bundle["integrity"]["digest"]
    for seq in range(len(bundle["events"])):
        assert (
            main(
                [
                    "prove",
                    str(bundle_file),
                    "--seq",
                    str(seq),
                    "--out",
                    "p.json",
                    "--key",
                    "k/signer.pub.pem",
                ]
            )
            == 0
        )
        assert (
            main(["verify-proof", "p.json", "--bundle-digest", digest, "--key", "k/signer.pub.pem"])
            == 0
        )
    assert (
        main(["verify-proof", "p.json", "--bundle", str(bundle_file), "--key", "k/signer.pub.pem"])
        == 0
    )
    proof = json.loads(Path("p.json").read_bytes())
    verify_proof = ["verify-proof", "p.json", "--bundle-digest", digest]
    verify_proof += ["--key", "k/signer.pub.pem"]
    # the same receipt pretty-printed: refused, receipts are their canonical bytes
    Path("p.json").write_text(json.dumps(proof, indent=2))
    capsys.readouterr()
    assert main(verify_proof) == 2
    assert "error: canonical: found proof of" in capsys.readouterr().err
    # a changed event, written canonically
    proof["event"]["agent_id"] = "someone-else"
    Path("p.json").write_bytes(canonical_bytes(proof))
    assert main(verify_proof) == 2
    assert "error: event (seq " in capsys.readouterr().err


def test_export_formats_and_worker_archive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "generate", "--out", "k"]) == 0
    assert main(["demo", "--runs", "3", "--seed", "4", "--out", "out"]) == 0
    run_id = sorted((tmp_path / "out").iterdir())[0].name.split(".bundle.json")[0]
    assert main(["export", run_id, "--out", "b.dsse.json", "--sign", "k.pem"]) == 0
    assert main(["verify", "b.dsse.json", "--key", "k.pub.pem"]) == 0
    assert main(["export", run_id, "--out", "e.jsonl", "--format", "jsonl"]) == 0
    lines = Path("e.jsonl").read_text().splitlines()
    assert [json.loads(x)["seq"] for x in lines] == list(range(len(lines)))
    assert main(["export", run_id, "--out", "e.csv", "--format", "csv"]) == 0
    assert len(Path("e.csv").read_text().splitlines()) == len(lines) + 1
    assert main(["export", run_id, "--out", "x", "--format", "csv", "--sign", "k.pem"]) == 2
    # the worker archives every bundle of a fresh store, signed, and again idempotently
    assert main(["simulate", "--runs", "4", "--seed", "9", "--broker", "sqlite:///w.db"]) == 0
    args = [
        "worker",
        "--once",
        "--broker",
        "sqlite:///w.db",
        "--archive",
        "arch",
        "--sign",
        "k.pem",
    ]
    assert main(args) == 0
    archived = sorted(p for p in (tmp_path / "arch").rglob("*.json"))
    assert len(archived) == 12
    rel = archived[0].relative_to(tmp_path / "arch").parts
    assert len(rel) == 5 and len(rel[1]) == 4 and len(rel[2]) == 2 and len(rel[3]) == 2
    before = {p: p.read_bytes() for p in archived}
    capsys.readouterr()
    assert main(["verify", *map(str, archived), "--key", "k.pub.pem"]) == 0
    from fleetledger.processors.archive import ArchiveSink, write_evidence
    from fleetledger.processors.pipeline import Bundle
    from fleetledger.processors.runtimes.embedded import EmbeddedReader
    from fleetledger.processors.signing import load_private_key

    key = load_private_key(Path("k.pem").read_bytes(), "k")
    sink = ArchiveSink(tmp_path / "arch", key)
    again = tmp_path / "again"
    with EmbeddedReader(Path("w.db")) as reader:
        for stored in reader.bundles():
            doc = json.loads(stored.data)
            run = doc["run"]
            bundle = Bundle(
                stored.run_id, run["tenant"], run["started_at"], stored.digest, doc, stored.data
            )
            assert sink.write(bundle) == []  # reprocessing: nothing rewritten
            # the stored bytes give back exactly the archived files (signatures included)
            for path in write_evidence(again, stored.data, key):
                assert path.read_bytes() in before.values()
    assert {p: p.read_bytes() for p in archived} == before


def test_worker_archive_and_key_from_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "generate", "--out", "k"]) == 0
    assert main(["simulate", "--runs", "3", "--seed", "2", "--broker", "sqlite:///s.db"]) == 0
    monkeypatch.setenv("FLEETLEDGER_COMPLIANCE_ARCHIVE", str(tmp_path / "compliance"))
    monkeypatch.setenv("FLEETLEDGER_SIGNING_KEY", str(tmp_path / "k.pem"))
    assert main(["worker", "--once", "--broker", "sqlite:///s.db"]) == 0
    files = sorted((tmp_path / "compliance").rglob("*.json"))
    assert len([p for p in files if p.name.endswith(".dsse.json")]) == 3
    capsys.readouterr()
    assert main(["verify", *map(str, files), "--key", "k.pub.pem"]) == 0
    monkeypatch.setenv("FLEETLEDGER_SIGNING_KEY", "")  # empty means unset (Compose)
    assert main(["worker", "--once", "--broker", "sqlite:///s.db"]) == 0
