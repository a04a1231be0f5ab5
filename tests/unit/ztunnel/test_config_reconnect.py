"""How the config client tells "control is away" (retry soon: at most `AWAY_MAX` apart) from "control answered no"
(back off to the long cap), for each failure it meets when connecting."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey

from ztunnel.config.client import AWAY_MAX, STABLE_SESSION, ConfigClient, NodeCredential, control_away

KEY = ConnectionKey("127.0.0.1", 15012, True, True, None, None, None)


def handshake(status: int) -> aiohttp.WSServerHandshakeError:
    return aiohttp.WSServerHandshakeError(None, (), status=status, message="refused")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("failure", "away"),
    [
        (aiohttp.ClientConnectorError(KEY, ConnectionRefusedError(111, "refused")), True),  # not listening
        (aiohttp.ServerDisconnectedError(), True),  # the process went away mid-handshake
        (ConnectionResetError(104, "reset"), True),
        (TimeoutError(), True),  # nothing answered at all
        (handshake(503), True),  # a control that is stopping
        (handshake(401), False),  # this node's credential is refused: retrying sooner will not help
        (handshake(403), False),
        (aiohttp.ClientConnectorCertificateError(KEY, ssl.SSLCertVerificationError("bad root")), False),
        (ssl.SSLError("handshake failure"), False),
    ],
)
def test_failures_that_mean_control_is_away(failure: BaseException, away: bool) -> None:
    assert control_away(failure) is away


def test_the_away_cap_finds_a_returning_control_within_a_second_and_never_exceeds_the_long_cap() -> None:
    assert AWAY_MAX <= 1.0 < STABLE_SESSION
    credential = NodeCredential.in_dir(Path("/nonexistent"))
    assert ConfigClient("https://c:15012", credential).away_max == AWAY_MAX
    assert ConfigClient("https://c:15012", credential, backoff_max=0.5).away_max == 0.5  # tests' short waits
