"""A corpus of realistic non-secrets, generated from a fixed seed, for the secret guard.

Each entry is text an agent's statement plausibly carries that is *not* a credential, but
looks enough like one to catch a careless rule: names that refer to secrets (``secret:…``
resources, Vault paths, effect references), commit hashes and digests, UUIDs and ULIDs, base64
images and public keys, certificates, long identifiers, package integrity hashes, ARNs, URLs
without credentials, and prose about passwords. The guard must report nothing in any of them.
"""

from __future__ import annotations

import base64
import hashlib
import random
import struct
import uuid
import zlib
from dataclasses import dataclass

SEED = 20261204


@dataclass(frozen=True)
class Benign:
    kind: str
    text: str


def _png(rng: random.Random, width: int, height: int) -> bytes:
    """A real PNG of random pixels (so its base64 is what an image upload looks like)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + rng.randbytes(width * 3) for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _words(rng: random.Random, n: int) -> list[str]:
    vocab = [
        *("payments", "orders", "billing", "ledger", "invoice", "customer", "account"),
        *("session", "report", "export", "gateway", "worker", "scheduler", "inventory"),
        *("search", "index", "cache", "queue", "stream", "audit"),
    ]
    return [rng.choice(vocab) for _ in range(n)]


def corpus() -> list[Benign]:
    rng = random.Random(SEED)
    out: list[Benign] = []

    def add(kind: str, text: str) -> None:
        out.append(Benign(kind, text))

    for env in ("prod", "staging", "dev"):
        for svc in ("payments", "orders", "billing"):
            add("secret reference", f"secret:{env}/{svc}/*")
            add("secret reference", f"secret:{env}/{svc}/db@v{rng.randint(1, 40)}")
            add("secret reference", f"secret:{env}/{svc}/api-key")
            add("vault path", f"vault:kv/data/{env}/{svc}/database-credentials")
            account = rng.randint(10**11, 10**12 - 1)
            arn = f"arn:aws:secretsmanager:eu-west-1:{account}:secret:{env}/{svc}/db-AbCdEf"
            add("secrets manager arn", arn)
            add("k8s secret ref", f'{{"secretKeyRef": {{"name": "{svc}-db", "key": "password"}}}}')
            add(
                "json secret name",
                f'{{"secret_name": "{env}-{svc}-token", "version": "v{rng.randint(1, 9)}"}}',
            )
            add("json secret ref", f'{{"secret": "{env}/{svc}/db-password", "action": "rotate"}}')
    for _ in range(12):
        sha = rng.randbytes(20).hex()
        add("commit hash", f"commit:{sha}")
        add("commit hash", f"Merge {sha[:12]} into main ({sha})")
        add("sha256 digest", f"sha256:{rng.randbytes(32).hex()}")
        add("image digest", f"ghcr.io/acme/web@sha256:{rng.randbytes(32).hex()}")
        add("uuid", str(uuid.UUID(bytes=rng.randbytes(16), version=4)))
        add("uuid", f'{{"request_id": "{uuid.UUID(bytes=rng.randbytes(16), version=4)}"}}')
        add("trace id", f"00-{rng.randbytes(16).hex()}-{rng.randbytes(8).hex()}-01")
        add(
            "npm integrity",
            "sha512-" + base64.b64encode(hashlib.sha512(rng.randbytes(8)).digest()).decode(),
        )
        sri = base64.b64encode(rng.randbytes(48)).decode()
        add("subresource integrity", f'<script src="/app.js" integrity="sha384-{sri}"></script>')
    for size in ((4, 4), (8, 8), (16, 16), (32, 8)):
        png = base64.b64encode(_png(rng, *size)).decode()
        add("base64 image", f"data:image/png;base64,{png}")
        add("base64 image", f'{{"attachment": {{"mime": "image/png", "data": "{png}"}}}}')
    for _ in range(4):
        blob = base64.b64encode(rng.randbytes(rng.randint(200, 600))).decode()
        add("base64 binary", f'{{"content_base64": "{blob}"}}')
        pub = base64.b64encode(
            b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00 " + rng.randbytes(32)
        ).decode()
        add("ssh public key", f"ssh-ed25519 {pub} deploy@acme")
        der = base64.b64encode(rng.randbytes(300)).decode()
        pem = "\n".join(der[i : i + 64] for i in range(0, len(der), 64))
        add("certificate", f"-----BEGIN CERTIFICATE-----\n{pem}\n-----END CERTIFICATE-----")
        add("public key", f"-----BEGIN PUBLIC KEY-----\n{pem}\n-----END PUBLIC KEY-----")
    for _ in range(10):
        parts = _words(rng, rng.randint(3, 6))
        add(
            "long identifier",
            "com.acme." + ".".join(parts) + "." + "".join(p.title() for p in parts) + "Handler",
        )
        add("long identifier", "_".join(parts).upper() + "_TIMEOUT_SECONDS")
        add("long identifier", "".join(p.title() for p in parts) + "ServiceClientFactoryBuilder")
        add(
            "k8s name",
            "-".join(parts) + f"-{rng.randbytes(5).hex()[:10]}-{rng.randbytes(3).hex()[:5]}",
        )
        year, part, page = rng.randint(2020, 2026), rng.randint(0, 99999), rng.randbytes(6).hex()
        add("s3 key", f"s3://acme-{parts[0]}/{'/'.join(parts[1:])}/{year}/part-{part:05d}.parquet")
        add("url", f"https://api.acme.dev/v2/{parts[0]}/{year}?page_token={page}&limit=50")
    prose = [
        "Rotate the database password for the payments service",
        "password reset requested for user 4821",
        '{"error": "invalid_grant", "error_description": "token expired"}',
        '{"token_type": "Bearer", "expires_in": 3600, "scope": "repo read:org"}',
        '{"password_policy": "min-length-12", "password_file": "/run/secrets/db"}',
        '{"max_tokens": 4096, "temperature": 0.2, "model": "gpt-4o"}',
        "Set DB_PASSWORD in the deployment's environment, never in the repo",
        "password: required",
        "the token is refreshed every 55 minutes by the sidecar",
        '{"api_key_id": "key-2024-07", "api_key_name": "ci-deploy"}',
        "PWD=/home/agent/src/payments",
        "curl -u $CI_USER:$CI_TOKEN https://ci.acme.dev/api",
        "mysql -u app -p orders",
        "export GITHUB_TOKEN=${{ secrets.GITHUB_TOKEN }}",
        '{"Authorization": "Bearer <token>"}',
        "git push https://github.com/acme/web.git main",
        "postgres://db.internal:5432/orders",
        "ERROR AuthenticationFailed: the password is incorrect",
        "token: TokenResponse",
        "secretKeyRef.name=payments-db",
    ]
    for text in prose:
        add("prose and config", text)
    return out
