"""Kafka through confluent-kafka: topics, the idempotent producer, and consumers that read exact
offset ranges (the Dagster cursor, not a consumer group, owns the offsets)."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Hashable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Generic, NamedTuple, TypeVar

import dagster as dg
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from rossmann_local.domain.topics import CATALOGUE_TOPICS, PARTITIONS
from rossmann_local.resources import resolved
from rossmann_local.settings import KAFKA_BOOTSTRAP_SERVERS, ConfigError

# librdkafka's own log (connects, disconnects, retries) goes through Python logging, not stderr;
# silent unless the application configures logging (outages are reported in metadata and errors).
CLIENT_LOG = logging.getLogger("rossmann_local.kafka.client")
CLIENT_LOG.addHandler(logging.NullHandler())


# How long after its confirmation a message is read back before it counts as kept. The bundled broker
# (noida-db) confirms before its data is durable and writes all or nothing every 0.5-1 s: a SIGKILL,
# or even a stop, within that window lost what it had confirmed (docs/reliability.md,
# bench/broker_durability.py). Apache Kafka with acks=all is durable at the confirmation; the wait
# then only delays the "verified" count.
SETTLE_SECONDS = 2.0


def wait_until_settled(newest_confirmation: datetime | None, settle_seconds: float = SETTLE_SECONDS) -> None:
    """Sleep until the newest confirmation is ``settle_seconds`` old (at once if there is none): then
    a read-back tells what the broker kept."""
    if newest_confirmation is not None:
        # bookkeeping, wall clock: the broker's durability is a wall-clock matter, not simulated time
        elapsed = (datetime.now(UTC) - newest_confirmation).total_seconds()
        time.sleep(max(0.0, settle_seconds - elapsed))


# One idempotent producer per process and broker (librdkafka's advice): its handshake costs about
# half a second, too much to pay per send; a run opens it as it starts (``setup_for_execution``). It
# reconnects by itself after an outage; a fatal error drops it so the next use gets a new one. Broker
# errors are collected per producer.
_SHARED_PRODUCERS: dict[tuple[str, int, str], tuple[Producer, list[str]]] = {}
SHOPS_CLIENT = "rossmann-local-shops"
_SHARED_LOCK = threading.Lock()


T = TypeVar("T", bound=Hashable)


@dataclass(frozen=True)
class Outgoing(Generic[T]):
    """A message to send, and what the sender calls it (``tag``) when the broker confirms it."""

    topic: str
    value: bytes | None  # None: a tombstone
    tag: T
    key: bytes | None = None
    headers: Sequence[tuple[str, bytes]] = ()  # domain.provenance: where the record comes from


@dataclass
class Confirmations(Generic[T]):
    """What the broker confirmed, by tag in sending order, and what went wrong."""

    sent: int = 0
    confirmed: list[T] = field(default_factory=list)
    placed: dict[T, tuple[int, int]] = field(default_factory=dict)  # tag -> (partition, offset) the broker gave
    errors: list[str] = field(default_factory=list)

    @property
    def unconfirmed(self) -> int:
        return self.sent - len(self.confirmed)


class RawMessage(NamedTuple):
    """A message as read, before parsing (a named tuple: a range is read by the hundred thousand)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


COMPACTED = {"cleanup.policy": "compact"}


class KafkaResource(dg.ConfigurableResource):
    """``bootstrap_servers`` from ``KAFKA_BOOTSTRAP_SERVERS``."""

    bootstrap_servers: str
    request_timeout_seconds: float = 10.0
    # How long the producer keeps retrying (through the client's own reconnects) before it reports
    # a message as not delivered.
    delivery_timeout_seconds: float = 30.0
    # Where the servers come from, for error messages: the setting, or the broker a command started.
    source: str = f"check {KAFKA_BOOTSTRAP_SERVERS}"

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """A run opens its process's producer as it starts. With no broker connection up yet, librdkafka
        asks for the idempotent producer's id on its 500 ms retry timer: a producer opened when the
        shift's stock levels are sent made that step wait half a second, in every run (a run is a process
        of its own under the daemon). Opened here, the wait passes while the run's first steps work."""
        if context.run is not None:
            self.shared_producer()

    def _servers(self) -> str:
        servers = resolved(self.bootstrap_servers)
        if not servers:
            raise ConfigError(f"{KAFKA_BOOTSTRAP_SERVERS} is empty")
        return servers

    def describe(self) -> str:
        """The brokers and where they come from, e.g. ``127.0.0.1:40123 (the local broker ...)``."""
        return f"{self._servers()} ({self.source})"

    def admin(self) -> AdminClient:
        return AdminClient({"bootstrap.servers": self._servers(), "logger": CLIENT_LOG})

    def ensure_topics(self) -> list[str]:
        """Create the project's topics with the reference partition counts; returns those it created."""
        admin = self.admin()
        existing = self._topics(admin)
        # The catalogue topics are compacted: each key's newest record is kept, a deleted key's tombstone
        # drops it (a topic that exists already keeps its own settings).
        missing = [NewTopic(name, partitions, config=COMPACTED if name in CATALOGUE_TOPICS else {})
                   for name, partitions in PARTITIONS.items() if name not in existing]
        created = []
        for name, future in (admin.create_topics(missing) if missing else {}).items():
            try:
                future.result()
                created.append(name)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
        return created

    def _topics(self, admin: AdminClient) -> dict[str, int]:
        try:
            metadata = admin.list_topics(timeout=self.request_timeout_seconds)
        except KafkaException as exc:
            raise ConfigError(f"Kafka at {self.describe()} is not reachable: "
                              f"{exc.args[0].str() if exc.args else exc}") from None
        return {name: len(topic.partitions) for name, topic in metadata.topics.items()}

    def topic_partitions(self) -> dict[str, int]:
        """Partition count per topic, from one metadata request."""
        return self._topics(self.admin())

    def partitions(self, topic: str) -> int:
        return self.topic_partitions().get(topic, 0)

    def producer(self, **overrides: object) -> Producer:
        """Idempotent (no duplicates from the client's own retries), every replica acknowledges,
        and a message the broker has not confirmed within the timeout is reported, never dropped."""
        config = {"bootstrap.servers": self._servers(), "enable.idempotence": True, "acks": "all",
                  "message.timeout.ms": int(self.delivery_timeout_seconds * 1000), "linger.ms": 5,
                  "logger": CLIENT_LOG, **overrides}
        return Producer(config)

    def shared_producer(self, client: str = SHOPS_CLIENT) -> tuple[Producer, list[str]]:
        """The process's producer for this broker, delivery timeout and ``client`` (its ``client.id``),
        and the list its errors go to. A client of its own per sender that runs beside the shops'
        steps (the stand-in's outbox relay), since a flush waits for every message of its producer."""
        key = (self._servers(), int(self.delivery_timeout_seconds * 1000), client)
        with _SHARED_LOCK:
            if key not in _SHARED_PRODUCERS:
                errors: list[str] = []

                def on_error(error: KafkaError, key: tuple[str, int, str] = key) -> None:
                    errors.append(str(error))
                    if error.fatal():
                        _SHARED_PRODUCERS.pop(key, None)

                _SHARED_PRODUCERS[key] = (self.producer(error_cb=on_error, **{"client.id": client}), errors)
            return _SHARED_PRODUCERS[key]

    def produce_confirmed(self, messages: Iterable[Outgoing[T]], timeout: float | None = None,
                          client: str = SHOPS_CLIENT) -> Confirmations[T]:
        """Send the messages in order with the process's idempotent producer for ``client`` and wait
        once for the broker's confirmations (at most ``timeout``, default the delivery timeout plus
        5 s). The caller marks as sent only what comes back confirmed; the rest it sends again."""
        outcome: Confirmations[T] = Confirmations()
        pending = list(messages)
        outcome.sent = len(pending)
        for _attempt in range(2):
            try:
                self._produce(pending, outcome, timeout, client)
                break
            except (KafkaException, SystemError) as exc:
                # A fatal producer error (e.g. the broker lost what it had confirmed, so the idempotent
                # sequence no longer matches): drop the producer, send what is unconfirmed with a new one.
                # confluent-kafka may surface it from inside flush() as a SystemError around the
                # KafkaException.
                error = _fatal_error(exc)
                if error is None:
                    raise
                outcome.errors.append(str(error))
                with _SHARED_LOCK:
                    _SHARED_PRODUCERS.pop((self._servers(), int(self.delivery_timeout_seconds * 1000), client), None)
                done = set(outcome.confirmed)
                pending = [m for m in pending if m.tag not in done]
        return outcome

    def _produce(self, messages: list[Outgoing[T]], outcome: Confirmations[T], timeout: float | None,
                 client: str) -> None:
        producer, broker_errors = self.shared_producer(client)
        seen = len(broker_errors)

        def on_delivery(error: KafkaError | None, message: Message, tag: T) -> None:
            if error is None:
                outcome.confirmed.append(tag)
                outcome.placed[tag] = (message.partition(), message.offset())
            else:
                outcome.errors.append(str(error))

        try:
            for message in messages:
                while True:
                    try:
                        producer.produce(message.topic, key=message.key, value=message.value,
                                         headers=list(message.headers) or None,
                                         on_delivery=lambda err, msg, tag=message.tag: on_delivery(err, msg, tag))
                        break
                    except BufferError:  # the client's queue is full: let it deliver, then go on
                        producer.poll(0.1)
                producer.poll(0)
            producer.flush(self.delivery_timeout_seconds + 5 if timeout is None else timeout)
        finally:
            outcome.errors[:0] = broker_errors[seen:]

    @contextmanager
    def consumer(self) -> Iterator[Consumer]:
        """A consumer that never joins a group or commits: offsets are assigned explicitly."""
        consumer = Consumer({"bootstrap.servers": self._servers(), "group.id": "rossmann-local-readers",
                             "enable.auto.commit": False, "session.timeout.ms": 6000,
                             "auto.offset.reset": "earliest", "enable.partition.eof": False,
                             "logger": CLIENT_LOG})
        try:
            yield consumer
        finally:
            consumer.close()

    def watermarks(self, consumer: Consumer, topic: str, partition: int) -> tuple[int, int]:
        try:
            return consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                  timeout=self.request_timeout_seconds)
        except KafkaException as exc:
            raise ConfigError(f"Kafka at {self.describe()} did not give the offsets of "
                              f"{topic}[{partition}]: {exc}") from None

    def topic_watermarks(self, topics: Iterable[str]) -> dict[tuple[str, int], tuple[int, int]]:
        """(low, high) of every partition of these topics, in topic and partition order (one metadata
        request, one consumer)."""
        counts = self.topic_partitions()
        with self.consumer() as consumer:
            return {(topic, partition): self.watermarks(consumer, topic, partition)
                    for topic in topics for partition in range(counts.get(topic, 0))}

    def topic_ends(self, topics: Iterable[str]) -> dict[tuple[str, int], int]:
        """Where every partition of these topics ends now (its high watermark): what follows is new."""
        return {key: high for key, (_low, high) in self.topic_watermarks(topics).items()}

    def read_range(self, topic: str, partition: int, start: int, end: int, timeout: float = 60.0) -> list[RawMessage]:
        """Exactly the messages at offsets [start, end) of one partition, or an error after ``timeout``."""
        messages: list[RawMessage] = []
        if end <= start:
            return messages
        deadline = time.monotonic() + timeout
        with self.consumer() as consumer:
            consumer.assign([TopicPartition(topic, partition, start)])
            position = start
            while position < end:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"read {topic}[{partition}] only up to offset {position} of "
                                       f"[{start}, {end}) within {timeout:g} s")
                for message in consumer.consume(num_messages=min(10_000, end - position), timeout=0.5):
                    if message.error():
                        if message.error().code() == KafkaError._PARTITION_EOF:
                            continue
                        raise KafkaException(message.error())
                    offset = message.offset()
                    if offset >= end:
                        position = end
                        break
                    # The one partition assigned: its topic and partition need not be asked of each message.
                    messages.append(RawMessage(topic, partition, offset, message.key(), message.value(),
                                               tuple(message.headers() or ())))
                    position = offset + 1
        return messages


def _fatal_error(exc: BaseException) -> KafkaError | None:
    """The fatal KafkaError behind ``exc`` (itself, or its cause or context), if there is one."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, KafkaException) and seen.args and isinstance(seen.args[0], KafkaError) \
                and seen.args[0].fatal():
            return seen.args[0]
        seen = seen.__cause__ or seen.__context__
    return None


DEFAULT_BOOTSTRAP_SERVERS = "127.0.0.1:9092"


def kafka_from_env() -> KafkaResource:
    """The resource for ``KAFKA_BOOTSTRAP_SERVERS`` (kept an EnvVar so it never shows in the UI)."""
    if os.environ.get(KAFKA_BOOTSTRAP_SERVERS):
        return KafkaResource(bootstrap_servers=dg.EnvVar(KAFKA_BOOTSTRAP_SERVERS))
    return KafkaResource(bootstrap_servers=DEFAULT_BOOTSTRAP_SERVERS)
