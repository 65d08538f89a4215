"""The Sync API fuzzed from its committed contract (contracts/sync-api.openapi.json) with schemathesis:
every endpoint and parameter, valid and invalid input, against the stand-in served on loopback.
No 500, no stack trace in a body, every answer as the document says (status, content type, body)."""

from __future__ import annotations

import json

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.generation import GenerationMode

from rossmann_local.contracts import CONTRACTS
from rossmann_local.sync_api.server import LoopbackServer
from rossmann_local_tests.conftest import ADMIN

EXAMPLES_PER_OPERATION = 100  # bounded: about 12 s for the ten operations here


# Loaded from the committed file (no server needed to collect the tests).
contract = schemathesis.openapi.from_dict(json.loads((CONTRACTS / "sync-api.openapi.json").read_text()))
contract.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])


@contract.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_every_answer_matches_the_contract_and_none_is_a_server_error(
        case: schemathesis.Case, sync_server: LoopbackServer) -> None:
    response = case.call_and_validate(base_url=sync_server.url, headers=ADMIN)
    assert response.status_code < 500, response.text
    assert "Traceback" not in response.text and 'File "' not in response.text
