"""How long the bundled broker (noida-db) takes to make a confirmed message durable.

``python -m bench.broker_durability [--messages 200] [--runs 3]``: for each delay, send messages with
``acks=all`` and idempotence, wait for every confirmation, wait the delay, SIGKILL the broker, start
it again on the same data directory and count what the topic still holds. Prints a table (median of
the runs). The figure behind ``shop.stock.SETTLE_SECONDS``.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import click

from rossmann_local.domain.topics import STOCK_TOPIC
from rossmann_local.local.broker import LocalBroker
from rossmann_local.resources.kafka import KafkaResource, Outgoing

DELAYS = (0.0, 0.2, 0.5, 1.0, 2.0)


def kept_after_kill(data: Path, messages: int, delay: float) -> tuple[int, int]:
    """(confirmed, still on the topic after SIGKILL and restart)."""
    broker = LocalBroker(data).start()
    kafka = KafkaResource(bootstrap_servers=broker.bootstrap_servers, delivery_timeout_seconds=10,
                          source="bench broker")
    kafka.ensure_topics()
    with kafka.consumer() as consumer:
        before = sum(kafka.watermarks(consumer, STOCK_TOPIC, p)[1] for p in range(3))
    sent = kafka.produce_confirmed(Outgoing(STOCK_TOPIC, f"m{i}".encode(), tag=i, key=b"1") for i in range(messages))
    time.sleep(delay)
    broker.kill()
    broker.start()
    try:
        with kafka.consumer() as consumer:
            after = sum(kafka.watermarks(consumer, STOCK_TOPIC, p)[1] for p in range(3)
                        if p < kafka.partitions(STOCK_TOPIC))
    finally:
        broker.stop()
    return len(sent.confirmed), max(0, after - before)


@click.command(help=__doc__.splitlines()[0])
@click.option("--messages", type=int, default=200, show_default=True)
@click.option("--runs", type=int, default=3, show_default=True)
def main(**options: int) -> None:
    args = SimpleNamespace(**options)
    print(f"{'delay after confirm (s)':>24}  {'confirmed':>9}  {'kept (median)':>13}  {'lost (median)':>13}  runs")
    for delay in DELAYS:
        kept = []
        confirmed = 0
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory() as directory:
                confirmed, survived = kept_after_kill(Path(directory) / "kafka", args.messages, delay)
                kept.append(survived)
        median = statistics.median(kept)
        print(f"{delay:>24.1f}  {confirmed:>9}  {median:>13g}  {confirmed - median:>13g}  {kept}")


if __name__ == "__main__":
    main()
