"""The contract every Broker, History and Presence implementation must meet.

Each test takes the ``backend`` fixture, which runs it once per implementation
in ``contract_support.BACKENDS``. Adding Redis or NATS is one entry there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from contract_support import BACKENDS, Backend


@pytest.fixture(params=sorted(BACKENDS))
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    made = BACKENDS[request.param]()
    yield made
    await made.history.close()
    await made.presence.close()
    for close in made.closers:
        await close()
