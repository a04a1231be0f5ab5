"""Per-peer limits (`ztunnel.proxy.limits`): one peer is a source identity and a source IP, each bounded,
and by default no peer may hold more than a quarter of the process' file descriptors."""

from __future__ import annotations

import pytest

from ztunnel.main import parser
from ztunnel.proxy.limits import HboneLimits, PeerLoad, connections_share, fd_limit, streams_share

A, B = "spiffe://cluster.local/ns/a/sa/a", "spiffe://cluster.local/ns/b/sa/b"


def test_an_identity_at_its_limit_is_refused_from_any_address_and_others_are_not() -> None:
    load = PeerLoad()
    assert load.admit_stream(A, "10.0.0.1", 2) is None
    assert load.admit_stream(A, "10.0.0.2", 2) is None
    assert load.admit_stream(A, "10.0.0.3", 2) == f"source identity {A}"
    assert load.admit_stream(B, "10.0.0.3", 2) is None


def test_an_address_at_its_limit_is_refused_whatever_identity_it_shows() -> None:
    load = PeerLoad()
    assert load.admit_connection(A, "10.0.0.1", 2) is None
    assert load.admit_connection(B, "10.0.0.1", 2) is None
    assert load.admit_connection("spiffe://cluster.local/ns/c/sa/c", "10.0.0.1", 2) == "source IP 10.0.0.1"


def test_a_refusal_counts_nothing_and_a_release_makes_room_and_leaves_no_entry() -> None:
    load = PeerLoad()
    assert load.admit_stream(A, "10.0.0.1", 1) is None
    assert load.admit_stream(A, "10.0.0.2", 1) is not None
    assert load.streams.by_ip == {"10.0.0.1": 1}  # the refused one left no count behind
    load.release_stream(A, "10.0.0.1")
    assert load.streams.by_identity == {} and load.streams.by_ip == {}
    assert load.admit_stream(A, "10.0.0.2", 1) is None


@pytest.mark.parametrize("fds", [1024, 20_000, 1 << 20])
def test_by_default_one_peer_never_holds_all_the_fds(fds: int) -> None:
    assert streams_share(fds) + connections_share(fds) <= fds * 65 // 100
    assert connections_share(fds) >= 50 and streams_share(fds) >= 200  # ordinary clients stay far below


def test_the_defaults_follow_this_process_fd_limit_and_100_streams_per_connection() -> None:
    limits = HboneLimits()
    assert limits.max_streams_per_connection == 100
    assert limits.h2_settings.max_concurrent_streams == 100
    assert limits.max_streams_per_peer == streams_share(fd_limit())
    assert limits.max_connections_per_peer == connections_share(fd_limit())


def test_the_command_line_sets_every_limit() -> None:
    args = parser().parse_args(
        [
            "--node=n",
            "--control=https://c:15012",
            "--credentials=/x",
            "--max-streams-per-connection=10",
            "--max-connections-per-peer=3",
            "--max-streams-per-peer=30",
            "--hbone-preface-timeout=2.5",
            "--hbone-idle-timeout=90",
        ]
    )
    assert (
        args.max_streams_per_connection,
        args.max_connections_per_peer,
        args.max_streams_per_peer,
        args.hbone_preface_timeout,
        args.hbone_idle_timeout,
    ) == (10, 3, 30, 2.5, 90.0)


@pytest.mark.parametrize("value", ["0", "-1", "1.5", "٣", "many"])
def test_a_limit_that_is_not_a_positive_whole_number_is_rejected_naming_it(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["--node=n", "--control=c", "--credentials=/x", f"--max-streams-per-peer={value}"])
    assert "--max-streams-per-peer" in capsys.readouterr().err


def test_limits_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="max_streams_per_peer"):
        HboneLimits(max_streams_per_peer=0)
    with pytest.raises(ValueError, match="idle_timeout"):
        HboneLimits(idle_timeout=0)
