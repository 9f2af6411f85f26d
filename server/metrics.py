"""Prometheus metrics of a log server, served on their own port (serve --metrics-listen).

Counted as they happen (by the service and the sequencer):

    affidavit_appends_total{result}            entries answered with a receipt: new | duplicate
    affidavit_refusals_total{code}             entries and requests refused, by gRPC status
    affidavit_batch_entries                    entries per integrated batch (histogram)
    affidavit_integration_seconds              time to integrate and sync one batch (histogram)
    affidavit_proof_requests_total{kind}       inclusion | consistency proofs asked for
    affidavit_http_requests_total{code}        HTTP face (tlog-tiles) requests answered, by status
    affidavit_witness_pushes_total{witness,result}
                                               checkpoints pushed to a witness (serve --witness):
                                               cosigned | refused | unreachable

Read from the log when scraped (never stale, nothing to keep in step):

    affidavit_tree_size                        entries in the latest checkpoint
    affidavit_queue_entries                    entries waiting for the integrator
    affidavit_witness_cosignature_age_seconds{witness}
                                               age of each trusted witness's newest cosignature
                                               (absent until the witness has cosigned): from the
                                               stored cosigned checkpoint and from every push

Each server has its own registry (no process-wide state), and nothing here ever holds an
entry's contents or a credential: labels are status names, result kinds and witness names.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence

from affidavit.merkle import note
from affidavit.merkle.errors import MerkleError
from affidavit.merkle.keys import Verifier
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class _LogState(Collector):
    """The gauges read from the log at scrape time."""

    def __init__(
        self,
        tree_size: Callable[[], int],
        queued: Callable[[], int],
        cosigned_note: Callable[[], str | None],
        witnesses: Sequence[Verifier],
        newest: dict[str, int],
    ) -> None:
        self._tree_size = tree_size
        self._queued = queued
        self._cosigned_note = cosigned_note
        self._witnesses = list(witnesses)
        # Newest cosignature time per witness name, kept across scrapes: a witness that stops
        # cosigning (its cosignature missing from the newest checkpoint) ages, not vanishes.
        self._newest = newest

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "affidavit_tree_size", "Entries in the latest checkpoint.", value=self._tree_size()
        )
        yield GaugeMetricFamily(
            "affidavit_queue_entries",
            "Entries waiting for the integrator.",
            value=self._queued(),
        )
        ages = GaugeMetricFamily(
            "affidavit_witness_cosignature_age_seconds",
            "Seconds since each trusted witness's newest cosignature the log holds.",
            labels=["witness"],
        )
        now = time.time()
        for name, timestamp in self._newest_cosignatures():
            self._newest[name] = max(timestamp, self._newest.get(name, 0))
        for name, timestamp in sorted(self._newest.items()):
            ages.add_metric([name], max(0.0, now - timestamp))
        yield ages

    def _newest_cosignatures(self) -> Iterator[tuple[str, int]]:
        cosigned = self._cosigned_note() if self._witnesses else None
        if not cosigned:
            return
        try:
            opened = note.open_note(cosigned, self._witnesses)
        except MerkleError:  # no cosignature by a witness trusted now
            return
        for sig in opened.signatures:
            if sig.timestamp is not None:
                yield sig.name, sig.timestamp


class Metrics:
    """A server's metrics and the registry that exposes them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.appends = Counter(
            "affidavit_appends",
            "Entries answered with a receipt, by result: new, or duplicate of an entry in the log.",
            ["result"],
            registry=self.registry,
        )
        self.refusals = Counter(
            "affidavit_refusals",
            "Entries and requests refused, by gRPC status code.",
            ["code"],
            registry=self.registry,
        )
        self.batch_entries = Histogram(
            "affidavit_batch_entries",
            "Entries per integrated batch.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.integration_seconds = Histogram(
            "affidavit_integration_seconds",
            "Time to integrate one batch: hash, grow the tiles, sign and sync.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.proof_requests = Counter(
            "affidavit_proof_requests",
            "Proofs asked for, by kind: inclusion or consistency.",
            ["kind"],
            registry=self.registry,
        )
        self.http_requests = Counter(
            "affidavit_http_requests",
            "Requests the HTTP face (tlog-tiles) answered, by status code.",
            ["code"],
            registry=self.registry,
        )
        self.witness_pushes = Counter(
            "affidavit_witness_pushes",
            "Checkpoints pushed to a witness, by the witness's key name and result: cosigned, "
            "refused (an HTTP answer other than a cosignature) or unreachable.",
            ["witness", "result"],
            registry=self.registry,
        )
        self._newest_cosignature: dict[str, int] = {}
        self._http_answered: dict[int, Counter] = {}

    def http_answered(self, status: int) -> None:
        """The HTTP face answered a request with status. Each status's child is looked up once:
        labels() per request took a lock and a tuple (3.8 % of a cached tile GET's CPU)."""
        child = self._http_answered.get(status)
        if child is None:
            child = self._http_answered[status] = self.http_requests.labels(str(status))
        child.inc()

    def witness_cosigned(self, witness: str, timestamp: int) -> None:
        """A pushed checkpoint came back cosigned by witness at timestamp (Unix seconds)."""
        self.witness_pushes.labels(witness, "cosigned").inc()
        self._newest_cosignature[witness] = max(timestamp, self._newest_cosignature.get(witness, 0))

    def watch_log(
        self,
        tree_size: Callable[[], int],
        queued: Callable[[], int],
        cosigned_note: Callable[[], str | None],
        witnesses: Sequence[Verifier],
    ) -> None:
        """Expose the gauges read from the log when scraped."""
        self.registry.register(
            _LogState(tree_size, queued, cosigned_note, witnesses, self._newest_cosignature)
        )

    def batch(self, entries: int, seconds: float) -> None:
        """One batch integrated (called by the sequencer)."""
        self.batch_entries.observe(entries)
        self.integration_seconds.observe(seconds)

    def text(self) -> bytes:
        """The exposition, in Prometheus text format."""
        return generate_latest(self.registry)


async def start(metrics: Metrics, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve GET /metrics on host:port (in the running event loop, beside gRPC); the runner to
    stop it with, and the port it listens on (port 0 picks one)."""

    async def exposition(request: web.Request) -> web.Response:
        response = web.Response(body=metrics.text())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application()
    app.router.add_get("/metrics", exposition)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_port=False)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise OSError(f"cannot listen on {host}:{port} (--metrics-listen): {e.strerror}") from None
    return runner, int(runner.addresses[0][1])
