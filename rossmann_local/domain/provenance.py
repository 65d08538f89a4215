"""Provenance in the Kafka headers of every record the chain produces, so a consumer can tell where a
record comes from without parsing it (as kafka-connect-datagen's task and iteration headers do): the
world it belongs to, its seed, the scenario it ran under, which part produced it, the simulated time
it speaks of and, for a fault a scenario injected, the fault's label. The values are UTF-8 text."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from rossmann_local.domain.catalogue import iso_z
from rossmann_local.domain.world import World

WORLD, SEED, SCENARIO, SOURCE = "rossmann.world", "rossmann.seed", "rossmann.scenario", "rossmann.source"
SIMULATED_TIME, FAULT = "rossmann.simulated_time", "rossmann.fault"
NO_SCENARIO = "none"

Headers = list[tuple[str, bytes]]


def world_fingerprint(world: World) -> str:
    """A short digest of the world's whole configuration: records of the same world share it."""
    return hashlib.sha256(world.model_dump_json().encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Provenance:
    """What every record a command or run produces has in common; ``headers`` adds the record's own."""

    world: str
    seed: int
    scenario: str

    @classmethod
    def of(cls, world: World, scenario: str | None) -> Provenance:
        return cls(world_fingerprint(world), world.seed, scenario or NO_SCENARIO)

    def headers(self, source: str, simulated_time: datetime | None, fault: str | None = None) -> Headers:
        """``source``: which part produced the record ("shop 3", "sync-api outbox", "dead letters",
        "scenario"); ``simulated_time``: the time it speaks of; ``fault``: the injected fault's label."""
        headers = [(WORLD, self.world), (SEED, str(self.seed)), (SCENARIO, self.scenario), (SOURCE, source)]
        if simulated_time is not None:
            headers.append((SIMULATED_TIME, iso_z(simulated_time)))
        if fault is not None:
            headers.append((FAULT, fault))
        return [(key, value.encode()) for key, value in headers]
