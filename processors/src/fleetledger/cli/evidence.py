"""Evidence commands: keys, export, verify, prove, verify-proof (``register(app)``).

The checks themselves are pure (``fleetledger.processors.evidence``); this module reads
and writes files and prints one line per verified path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from fleetledger.cli.common import BrokerOpt, backend_of
from fleetledger.kernel.errors import ConfigError, FleetLedgerError, StoreError, VerificationError


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {str(path)!r} cannot be read: {exc.strerror}") from exc


def load_signing_key(path: Path) -> Any:
    from fleetledger.processors.signing import load_private_key

    return load_private_key(_read(path, "key"), str(path))


def load_trusted(keys: list[Path] | None, trust: Path | None) -> list[Any]:
    from fleetledger.processors.signing import load_public_keys

    found: list[Any] = []
    for p in keys or []:
        found += load_public_keys(_read(p, "public key"), str(p))
    if trust is not None:
        found += load_public_keys(_read(trust, "trust file"), str(trust))
    return found


def archive_sink(folder: Path | None, sign: Path | None) -> Any:
    """The worker's archive sink (None without --archive); --sign needs --archive."""
    if folder is None:
        if sign is not None:
            raise ConfigError("--sign without --archive: expected --archive DIR to sign into")
        return None
    from fleetledger.processors.archive import ArchiveSink

    return ArchiveSink(folder, load_signing_key(sign) if sign is not None else None)


def _sibling_loader(path: Path) -> Any:
    def load(name: str) -> bytes | None:
        if "/" in name or "\\" in name or name in ("", ".", ".."):
            return None
        p = path.parent / name
        return p.read_bytes() if p.is_file() else None

    return load


def _load_bundle_any(path: Path, trusted: list[Any]) -> tuple[dict[str, Any], Any]:
    """A bundle from a bundle file or a signed envelope, verified; (bundle, Verified)."""
    from fleetledger.processors.evidence import open_envelope, parse_json, verify_file

    data = _read(path, "bundle")
    facts = verify_file(data, trusted, _sibling_loader(path))
    obj = parse_json(data, "file")
    if isinstance(obj, dict) and "payloadType" in obj:
        _ptype, payload, _kid = open_envelope(data, trusted)
        obj = parse_json(payload, "payload")
    if "events" not in obj:
        raise VerificationError("format", f"found {facts.kind} in {str(path)!r}, expected a bundle")
    return obj, facts


def register(app: typer.Typer) -> None:
    keys_app = typer.Typer(no_args_is_help=True, help="Ed25519 signing keys.")
    app.add_typer(keys_app, name="keys")

    @keys_app.command("generate")
    def keys_generate(
        ctx: typer.Context,
        out: Annotated[Path, typer.Option(help="writes PREFIX.pem (0600) and PREFIX.pub.pem")],
    ) -> None:
        """Generate an Ed25519 key pair."""
        from fleetledger.processors.signing import generate_key, keyid, private_pem, public_pem

        key = generate_key()
        priv, pub = Path(f"{out}.pem"), Path(f"{out}.pub.pem")
        if priv.exists():
            raise ConfigError(
                f"{str(priv)!r} exists; expected a new prefix (keys are not overwritten)"
            )
        priv.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(priv, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(private_pem(key))
        os.chmod(priv, 0o600)
        pub.write_bytes(public_pem(key.public_key()))
        ctx.obj.console.print(
            f"wrote {priv} (private, 0600) and {pub}; keyid {keyid(key.public_key())}"
        )

    @app.command("export")
    def export(
        ctx: typer.Context,
        run_id: str,
        out: Annotated[Path, typer.Option(help="output file")],
        sign: Annotated[Path | None, typer.Option("--sign", help="Ed25519 private key PEM")] = None,
        fmt: Annotated[str, typer.Option("--format", help="json | jsonl | csv")] = "json",
        broker: BrokerOpt = None,
    ) -> None:
        """Export a run's bundle (json, signed with --sign) or its events (jsonl/csv)."""
        from fleetledger.processors.archive import write_atomic
        from fleetledger.processors.export import check_format, export_bundle

        check_format(fmt, signed=sign is not None)
        key = load_signing_key(sign) if sign is not None else None
        with backend_of(ctx, broker=broker).reader() as reader:
            found = reader.bundle(run_id)
        if found is None:
            raise StoreError(
                f"found no bundle of run {run_id!r}; expected a finished run "
                "(see `fleetledger runs`)"
            )
        exported = export_bundle(found.data, fmt, key)
        write_atomic(out, exported.data)
        ctx.obj.console.print(
            f"wrote {out} ({fmt}{', signed' if exported.signed else ''}, {exported.events} events)"
        )

    @app.command("verify")
    def verify(
        ctx: typer.Context,
        paths: Annotated[list[Path], typer.Argument(help="bundle / .dsse.json / .intoto.json")],
        key: Annotated[
            list[Path] | None, typer.Option("--key", help="pinned public key PEM")
        ] = None,
        trust: Annotated[
            Path | None, typer.Option("--trust", help="file of PEM public keys")
        ] = None,
    ) -> None:
        """Verify evidence offline; exit 0 only if every path holds."""
        from fleetledger.processors.evidence import verify_file

        trusted = load_trusted(key, trust)
        if not paths:
            raise VerificationError("empty", "found no path, expected evidence files to verify")
        failed = 0
        for path in paths:
            try:
                if path.is_dir():
                    raise VerificationError("empty", "found a folder, expected files (use DIR/*)")
                facts = verify_file(_read(path, "file"), trusted, _sibling_loader(path))
            except FleetLedgerError as exc:
                failed += 1
                ctx.obj.console.print(
                    f"FAIL {path}: {exc}", markup=False, highlight=False, soft_wrap=True
                )
                continue
            signer = (
                f"signed by keyid {facts.signed_by}"
                if facts.signed_by
                else ("unsigned: integrity only")
            )
            ctx.obj.console.print(
                f"OK   {path}: {facts.kind} of run {facts.run_id}, {facts.events} events, "
                f"digest {facts.digest}, merkle {facts.merkle_root[:16]}..., {signer}",
                markup=False,
                highlight=False,
            )
        if failed:
            raise VerificationError(
                "verify", f"found {failed} of {len(paths)} path(s) failing, expected none"
            )

    @app.command("prove")
    def prove(
        ctx: typer.Context,
        bundle_path: Annotated[Path, typer.Argument(metavar="BUNDLE")],
        seq: Annotated[int, typer.Option("--seq", help="event to disclose")],
        out: Annotated[Path, typer.Option(help="proof file")],
        key: Annotated[list[Path] | None, typer.Option("--key", help="pinned public key")] = None,
        sign: Annotated[Path | None, typer.Option("--sign", help="attest with this key")] = None,
    ) -> None:
        """Write one event with its Merkle inclusion proof (and the signed attestation)."""
        from fleetledger.processors.archive import write_atomic
        from fleetledger.processors.evidence import attestation as attest
        from fleetledger.processors.evidence import file_stem, make_proof, parse_json
        from fleetledger.processors.signing import envelope_bytes

        trusted = load_trusted(key, None)
        bundle, _facts = _load_bundle_any(bundle_path, trusted)
        stem = file_stem(bundle["run"]["run_id"])
        attestation = None
        if sign is not None:
            attestation = attest(bundle, load_signing_key(sign))
        else:
            att = bundle_path.parent / f"{stem}.intoto.json"
            if att.is_file():
                attestation = parse_json(att.read_bytes(), "attestation")
        proof = make_proof(bundle, seq, attestation)
        write_atomic(out, envelope_bytes(proof))
        ctx.obj.console.print(
            f"wrote {out}: seq {seq} of run {bundle['run']['run_id']} with "
            f"{len(proof['audit_path'])} audit hashes"
            f"{' and a signed attestation' if attestation else ' (no attestation)'}"
        )

    @app.command("verify-proof")
    def verify_proof_cmd(
        ctx: typer.Context,
        proof_path: Annotated[Path, typer.Argument(metavar="FILE")],
        bundle_digest: Annotated[str | None, typer.Option("--bundle-digest")] = None,
        bundle: Annotated[
            Path | None, typer.Option("--bundle", help="bundle or signed bundle")
        ] = None,
        key: Annotated[list[Path] | None, typer.Option("--key", help="pinned public key")] = None,
        trust: Annotated[Path | None, typer.Option("--trust")] = None,
    ) -> None:
        """Check that a disclosed event belongs to a (signed) bundle."""
        from fleetledger.processors.evidence import parse_json, verify_proof

        trusted = load_trusted(key, trust)
        facts = None
        if bundle is not None:
            _b, facts = _load_bundle_any(bundle, trusted)
        proof = parse_json(_read(proof_path, "proof"), "proof")
        got = verify_proof(proof, bundle_digest_hex=bundle_digest, trusted=trusted, bundle=facts)
        by = f", signed by keyid {got.signed_by}" if got.signed_by else ""
        ctx.obj.console.print(
            f"OK   {proof_path}: seq {proof['seq']} is leaf {proof['seq']} of {got.events} under "
            f"merkle root {got.merkle_root} of bundle {got.digest}{by}",
            markup=False,
            highlight=False,
        )
