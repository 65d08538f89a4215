"""The chain's web/admin side of the catalogue: changes entered in the Sync API through its admin
endpoints (the stand-in's ``/admin/...``), each in effect from its simulated time. The Sync API then
publishes each on Kafka (the stand-in's outbox) and serves it to the next sync."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

import dagster as dg
import httpx

from rossmann_local.domain.catalogue_changes import (
    CatalogueChange,
    CategoryNameChange,
    DescriptionChange,
    PriceChange,
    message_key,
)
from rossmann_local.domain.messages import stated_time
from rossmann_local.domain.provenance import Provenance
from rossmann_local.domain.scenario import MALFORMED, StreamFault, malformed_payload
from rossmann_local.resources import resolved
from rossmann_local.resources.kafka import KafkaResource, Outgoing
from rossmann_local.settings import ADMIN_TOKEN_FILE, DEFAULT_SYNC_API_URL, SYNC_API_ADMIN_TOKEN, SYNC_API_URL, data_dir


class CatalogueAdminError(dg.Failure):
    """The Sync API refused a change: its status and answer, never the token."""


class CatalogueAdmin(dg.ConfigurableResource):
    """``base_url`` from ``ROSSMANN_SYNC_API_URL``. The admin token is read when a change is entered
    (never kept in the resource's config, which the UI shows): ``admin_token`` if given, else
    ``ROSSMANN_SYNC_API_ADMIN_TOKEN``, else the one the local stack keeps in the data dir."""

    base_url: str = DEFAULT_SYNC_API_URL
    admin_token: str | None = None
    timeout_seconds: float = 10.0

    def enter(self, changes: Iterable[CatalogueChange]) -> int:
        """Each change in the Sync API, in order; returns how many. The first refusal stops, naming it."""
        base, token = str(resolved(self.base_url)).rstrip("/"), resolved(self.admin_token) or _admin_token()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        count = 0
        with httpx.Client(base_url=base, timeout=self.timeout_seconds, headers=headers) as client:
            for change in changes:
                path, body = _request(change)
                try:
                    answer = client.post(path, json={**body, "effective_at_utc": change.at.isoformat()})
                except httpx.HTTPError as exc:
                    raise CatalogueAdminError(f"the Sync API at {base} did not take {path}: {exc}") from None
                if answer.status_code != 200:
                    hint = f"; check {SYNC_API_ADMIN_TOKEN}" if answer.status_code == 401 else ""
                    raise CatalogueAdminError(f"the Sync API at {base} refused {path} with {answer.status_code}: "
                                              f"{answer.text[:300]}{hint}")
                count += 1
        return count


def _request(change: CatalogueChange) -> tuple[str, dict[str, object]]:
    if isinstance(change, PriceChange):
        return (f"/admin/products/{change.product_id}/prices/{change.city}",
                {"price": float(change.price), "discount": float(change.discount)})
    if isinstance(change, DescriptionChange):
        return f"/admin/products/{change.product_id}", {"description": change.description}
    if isinstance(change, CategoryNameChange):
        return f"/admin/categories/{change.category_id}", {"name": change.name}
    raise TypeError(f"not a catalogue change: {change!r}")


def _admin_token() -> str | None:
    if token := os.environ.get(SYNC_API_ADMIN_TOKEN):
        return token
    kept = data_dir() / ADMIN_TOKEN_FILE
    return kept.read_text().strip() if kept.exists() else None


def catalogue_admin_from_env() -> CatalogueAdmin:
    url = dg.EnvVar(SYNC_API_URL) if os.environ.get(SYNC_API_URL) else DEFAULT_SYNC_API_URL
    return CatalogueAdmin(base_url=url)


MALFORMED_FAULT_TAG = "malformed"  # a spoiled message's tag: the tests' contract check lets it through


class FaultOriginalsMissing(dg.Failure):
    """A scenario's fault concerns a change whose message never appeared on its topic."""


def fault_messages(faults: Sequence[StreamFault], originals: Mapping[tuple[str, str, datetime], str],
                   provenance: Provenance) -> list[Outgoing[int | str]]:
    """Each fault's message: the original of its change (by topic, key and effective time in UTC)
    delivered again, or spoiled for a malformed one; keyed like it, its ``rossmann.fault`` header
    naming the ledger entry (kind, day and number)."""
    outgoing: list[Outgoing[int | str]] = []
    for fault in faults:
        entry = fault.entry
        payload = originals[(entry.topic, entry.key, entry.effective_at.astimezone(UTC))]
        tag: int | str = entry.number
        if entry.kind == MALFORMED:
            payload, tag = malformed_payload(payload, entry.detail.removeprefix("malformed: ")), MALFORMED_FAULT_TAG
        label = f"{entry.kind} ({entry.day} #{entry.number})"
        headers = provenance.headers("scenario", entry.effective_at, fault=label)
        outgoing.append(Outgoing(entry.topic, payload.encode(), tag=tag, key=entry.key.encode(), headers=headers))
    return outgoing


def deliver_stream_faults(kafka: KafkaResource, faults: Sequence[StreamFault], marks: Mapping[tuple[str, int], int],
                          provenance: Provenance, timeout: float = 30.0) -> int:
    """The scenario's faults on the stream of any Sync API that publishes the contract's messages: each
    fault's original found on its topic after ``marks`` (the topics' ends before the day's changes were
    entered; waited for while the Sync API publishes them), then delivered again or spoiled. Returns
    how many the broker confirmed; all of them, or it raises."""
    if not faults:
        return 0
    wanted = {(f.entry.topic, f.entry.key, f.entry.effective_at.astimezone(UTC)) for f in faults}
    originals = find_published(kafka, wanted, marks, timeout)
    return send_fault_messages(kafka, faults, originals, provenance)


def find_published(kafka: KafkaResource, wanted: set[tuple[str, str, datetime]],
                   marks: Mapping[tuple[str, int], int], timeout: float = 30.0) -> dict[tuple[str, str, datetime], str]:
    """The message of each (topic, key, stated time) wanted, found after ``marks`` on its topic: waited for
    while the Sync API publishes them; raises naming the ones missing after ``timeout`` seconds."""
    found: dict[tuple[str, str, datetime], str] = {}
    deadline = time.monotonic() + timeout  # bookkeeping: how long to wait for the Sync API's publishing
    while not wanted <= found.keys():
        if time.monotonic() > deadline:
            missing = sorted(f"{t} {k} at {at.isoformat()}" for t, k, at in wanted - found.keys())
            raise FaultOriginalsMissing(f"the messages of {len(missing)} changes did not appear on Kafka within "
                                        f"{timeout:g} s: {missing[:3]}")
        for (topic, partition), (_low, high) in kafka.topic_watermarks(sorted({t for t, *_ in wanted})).items():
            for message in kafka.read_range(topic, partition, marks.get((topic, partition), 0), high):
                if (at := stated_time(message.value)) is not None:
                    with contextlib.suppress(ValueError, KeyError, TypeError):  # a message with no key in its JSON
                        payload = (message.value or b"").decode()
                        found.setdefault((topic, message_key(topic, payload), at), payload)
        if not wanted <= found.keys():
            time.sleep(0.2)
    return found


def await_published(kafka: KafkaResource, changes: Sequence[CatalogueChange],
                    marks: Mapping[tuple[str, int], int], timeout: float = 30.0) -> None:
    """Until the Sync API has published every change entered (each its message after ``marks``): a
    step that follows the job then finds them on Kafka, the shops' lag counting them."""
    find_published(kafka, {(c.topic, c.key, c.at.astimezone(UTC)) for c in changes}, marks, timeout)


def send_fault_messages(kafka: KafkaResource, faults: Sequence[StreamFault],
                        originals: Mapping[tuple[str, str, datetime], str], provenance: Provenance) -> int:
    """``fault_messages`` sent; how many the broker confirmed: all of them, or it raises."""
    outgoing = fault_messages(faults, originals, provenance)
    sent = kafka.produce_confirmed(outgoing)
    if sent.unconfirmed:
        raise RuntimeError(f"{sent.unconfirmed} of the scenario's {len(outgoing)} messages were not confirmed: "
                           f"{sent.errors[:3]}")
    return len(outgoing)
