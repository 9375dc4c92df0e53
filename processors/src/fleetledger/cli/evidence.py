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
from fleetledger.kernel.errors import ConfigError, StoreError, VerificationError


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
        from fleetledger.processors.readstore import run_view

        found = backend_of(ctx, broker=broker)
        with found.read_model() as store:
            view = run_view(store, run_id, archive=found.settings.compliance_archive)
        if view is None or view.bundle is None:
            raise StoreError(
                f"found no bundle of run {run_id!r}; expected a finished run "
                "(see `fleetledger runs`)"
            )
        exported = export_bundle(view.bundle, fmt, key)
        write_atomic(out, exported.data)
        ctx.obj.console.print(
            f"wrote {out} ({fmt}{', signed' if exported.signed else ''}, {exported.events} events)"
        )

    @app.command("verify")
    def verify(
        ctx: typer.Context,
        paths: Annotated[
            list[Path],
            typer.Argument(help="bundle / .dsse.json / .intoto.json files, or folders of them"),
        ],
        key: Annotated[
            list[Path] | None, typer.Option("--key", help="pinned public key PEM")
        ] = None,
        trust: Annotated[
            Path | None, typer.Option("--trust", help="file of PEM public keys")
        ] = None,
        jobs: Annotated[
            int | None, typer.Option("--jobs", "-j", help="processes [default: every core]")
        ] = None,
    ) -> None:
        """Verify evidence offline; exit 0 only if every file holds."""
        from fleetledger.processors.verification import verify_paths

        results = verify_paths(paths, load_trusted(key, trust), jobs=jobs)
        for r in results:
            if r.facts is None:
                line = f"FAIL {r.path}: {r.error}"
            else:
                f = r.facts
                signer = (
                    f"signed by keyid {f.signed_by}" if f.signed_by else "unsigned: integrity only"
                )
                line = (
                    f"OK   {r.path}: {f.kind} of run {f.run_id}, {f.events} events, "
                    f"digest {f.digest}, merkle {f.merkle_root[:16]}..., {signer}"
                )
            ctx.obj.console.print(line, markup=False, highlight=False, soft_wrap=True)
        failed = sum(not r.ok for r in results)
        if failed:
            raise VerificationError(
                "verify", f"found {failed} of {len(results)} file(s) failing, expected none"
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
        from fleetledger.processors.verification import load_verified_bundle

        trusted = load_trusted(key, None)
        bundle, _facts = load_verified_bundle(bundle_path, trusted)
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
        from fleetledger.processors.evidence import verify_proof_bytes
        from fleetledger.processors.verification import load_verified_bundle

        trusted = load_trusted(key, trust)
        facts = load_verified_bundle(bundle, trusted)[1] if bundle is not None else None
        data = _read(proof_path, "proof")
        got = verify_proof_bytes(
            data, bundle_digest_hex=bundle_digest, trusted=trusted, bundle=facts
        )
        by = f", signed by keyid {got.signed_by}" if got.signed_by else ""
        ctx.obj.console.print(
            f"OK   {proof_path}: seq {got.seq} is leaf {got.seq} of {got.events} under "
            f"merkle root {got.merkle_root} of bundle {got.digest}{by}",
            markup=False,
            highlight=False,
        )
