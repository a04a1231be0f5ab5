"""Load balancing: each algorithm spreads requests as its name promises, consistent hashing keeps a key on its
endpoint and moves only about 1/N of the keys when one of N endpoints goes."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from meshlet_contracts.traffic import ConsistentHash, LoadBalancer
from ztunnel.l7.balance import Balancer, LeastRequest, Maglev, RingHash, hash64

KEYS = [f"user-{i}" for i in range(10_000)]


def endpoints(n: int) -> list[str]:
    return [f"10.0.0.{i + 1}:8080" for i in range(n)]


def test_round_robin_takes_each_in_turn() -> None:
    balancer = Balancer(None)
    eps = endpoints(3)
    assert [balancer.pick(eps) for _ in range(6)] == eps + eps


def test_random_spreads_evenly() -> None:
    balancer = Balancer(LoadBalancer(simple="RANDOM"), random.Random(1))
    counts = Counter(balancer.pick(endpoints(4)) for _ in range(8000))
    assert set(counts) == set(endpoints(4))
    assert all(1700 < c < 2300 for c in counts.values())


def test_least_request_never_picks_the_busiest_of_two() -> None:
    lr = LeastRequest(random.Random(2))
    eps = endpoints(3)
    for _ in range(5):
        lr.begin(eps[0])
    picks = Counter(lr.pick(eps) for _ in range(3000))
    # eps[0] loses every comparison it is drawn into, and with 3 endpoints it is always drawn against another.
    assert picks[eps[0]] == 0
    assert picks[eps[1]] > 1000 and picks[eps[2]] > 1000


def test_least_request_steers_away_from_a_slow_endpoint() -> None:
    """A slow endpoint keeps its requests longer; with requests finishing after 1 tick on fast endpoints and 10 on
    the slow one, the slow one gets far less than its 1/3 share."""
    lr = LeastRequest(random.Random(3))
    eps = endpoints(3)
    in_flight: list[tuple[int, str]] = []
    picks: Counter[str] = Counter()
    for tick in range(3000):
        for done in [entry for entry in in_flight if entry[0] <= tick]:
            in_flight.remove(done)
            lr.end(done[1])
        for _ in range(3):  # three requests per tick
            ep = lr.pick(eps)
            lr.begin(ep)
            picks[ep] += 1
            in_flight.append((tick + (10 if ep == eps[0] else 1), ep))
    assert picks[eps[0]] < sum(picks.values()) / 6


def test_least_request_forgets_finished_endpoints() -> None:
    lr = LeastRequest()
    lr.begin("a")
    lr.end("a")
    assert lr.active("a") == 0 and not lr._active


def test_a_single_endpoint_is_always_picked() -> None:
    for policy in (None, LoadBalancer(simple="LEAST_REQUEST"), LoadBalancer(simple="RANDOM")):
        assert Balancer(policy).pick(["only"]) == "only"


def test_no_endpoints_is_an_error() -> None:
    with pytest.raises(ValueError, match="no endpoint"):
        Balancer(None).pick([])


def hashing(maglev: bool) -> Balancer:
    return Balancer(LoadBalancer(consistent_hash=ConsistentHash(http_header_name="x-user", maglev=maglev)))


@pytest.mark.parametrize("maglev", [False, True])
def test_the_same_key_always_maps_to_the_same_endpoint(maglev: bool) -> None:
    eps = endpoints(5)
    first = hashing(maglev)
    second = hashing(maglev)  # another proxy, or this one restarted: the same mapping
    for key in KEYS[:1000]:
        pick = first.pick(eps, key)
        assert first.pick(eps, key) == pick
        assert second.pick(list(reversed(eps)), key) == pick


@pytest.mark.parametrize("maglev", [False, True])
@pytest.mark.parametrize("n", [3, 5, 10])
def test_removing_one_of_n_endpoints_moves_about_one_nth_of_the_keys(maglev: bool, n: int) -> None:
    eps = endpoints(n)
    balancer = hashing(maglev)
    before = {key: balancer.pick(eps, key) for key in KEYS}
    for gone in (eps[0], eps[n // 2], eps[-1]):
        left = [e for e in eps if e != gone]
        after = {key: balancer.pick(left, key) for key in KEYS}
        moved = sum(before[key] != after[key] for key in KEYS)
        # Every key of the endpoint that went has to move; hardly any other may.
        assert sum(before[key] == gone for key in KEYS) <= moved
        assert 0.5 * len(KEYS) / n <= moved <= 1.5 * len(KEYS) / n, (gone, moved)
        assert all(after[key] == before[key] for key in KEYS if before[key] != gone) or maglev
        balancer.pick(eps, "warm")  # back to the full set


@pytest.mark.parametrize("maglev", [False, True])
def test_consistent_hash_spreads_keys_evenly(maglev: bool) -> None:
    balancer, eps = hashing(maglev), endpoints(5)
    counts = Counter(balancer.pick(eps, key) for key in KEYS)
    assert all(1500 < c < 2500 for c in counts.values()), counts


def test_consistent_hash_without_a_key_picks_at_random() -> None:
    balancer = Balancer(LoadBalancer(consistent_hash=ConsistentHash(use_source_ip=True)), random.Random(4))
    assert len({balancer.pick(endpoints(3), None) for _ in range(100)}) == 3


def test_maglev_gives_every_endpoint_its_share_of_the_table_within_one() -> None:
    table = Maglev(endpoints(7), 65537)
    counts = Counter(table.pick(slot) for slot in range(65537))
    assert max(counts.values()) - min(counts.values()) <= 1
    assert len(table) == 65537


def test_maglev_depends_on_the_set_not_the_order() -> None:
    a, b = Maglev(endpoints(4), 251), Maglev(list(reversed(endpoints(4))), 251)
    assert all(a.pick(slot) == b.pick(slot) for slot in range(251))


def test_a_ring_has_the_requested_points_per_endpoint() -> None:
    assert len(RingHash(endpoints(3), 342)) == 3 * 342


def test_the_ring_is_rebuilt_only_when_the_endpoint_set_changes() -> None:
    balancer = hashing(False)
    balancer.pick(endpoints(3), "k")
    table = balancer._hash_table(endpoints(3))
    balancer.pick(list(reversed(endpoints(3))), "k")
    assert balancer._hash_table(endpoints(3)) is table
    balancer.pick(endpoints(2), "k")
    assert balancer._hash_table(endpoints(2)) is not table
    # An endpoint that goes and comes back (ejected for a while) finds its set's table kept.
    assert balancer._hash_table(endpoints(3)) is table


def test_hash64_is_stable_and_64_bits() -> None:
    assert hash64("x") == hash64(b"x") < 2**64
    assert hash64("x") != hash64("y")
