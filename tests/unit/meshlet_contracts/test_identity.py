"""The one SPIFFE parser: every part matched in full on ASCII, so no identity exists in two spellings.

Each hostile input is one a regex with `$`, `\\d`/`\\w` or `int()` would let through: a trailing newline, NUL,
Unicode look-alikes (Cyrillic `е`, fullwidth letters) and non-ASCII digits.
"""

from __future__ import annotations

import pytest

from meshlet_contracts.identity import (
    IdentityError,
    WorkloadIdentity,
    parse_port,
    parse_spiffe_id,
    spiffe_id,
    workload_identity,
)

WEB = "spiffe://cluster.local/ns/mesh/sa/web"

# (what, uri): none of these is a workload identity.
HOSTILE_URIS = [
    ("trailing newline", WEB + "\n"),
    ("trailing CRLF", WEB + "\r\n"),
    ("leading newline", "\n" + WEB),
    ("newline inside", "spiffe://cluster.local/ns/mesh/sa/we\nb"),
    ("trailing NUL", WEB + "\x00"),
    ("NUL inside", "spiffe://cluster.local/ns/mesh/sa/w\x00eb"),
    ("NUL in namespace", "spiffe://cluster.local/ns/me\x00sh/sa/web"),
    ("trailing space", WEB + " "),
    ("trailing tab", WEB + "\t"),
    ("Cyrillic e in service account", "spiffe://cluster.local/ns/mesh/sa/w\u0435b"),
    ("Cyrillic e in namespace", "spiffe://cluster.local/ns/m\u0435sh/sa/web"),
    ("Cyrillic o in trust domain", "spiffe://cluster.l\u043ecal/ns/mesh/sa/web"),
    ("fullwidth service account", "spiffe://cluster.local/ns/mesh/sa/\uff57\uff45\uff42"),
    ("fullwidth solidus", "spiffe://cluster.local/ns/mesh\uff0fsa/web"),
    ("Arabic-Indic digit", "spiffe://cluster.local/ns/mesh/sa/web\u0668"),
    ("superscript digit", "spiffe://cluster.local/ns/mesh/sa/web\u00b2"),
    ("zero-width space", "spiffe://cluster.local/ns/mesh/sa/web\u200b"),
    ("upper case", "spiffe://cluster.local/ns/mesh/sa/Web"),
    ("upper-case scheme", "SPIFFE://cluster.local/ns/mesh/sa/web"),
    ("percent-encoded newline", "spiffe://cluster.local/ns/mesh/sa/web%0a"),
    ("trailing slash", WEB + "/"),
    ("extra segment", WEB + "/x"),
    ("dot-dot service account", "spiffe://cluster.local/ns/mesh/sa/.."),
    ("empty service account", "spiffe://cluster.local/ns/mesh/sa/"),
    ("dot in namespace", "spiffe://cluster.local/ns/me.sh/sa/web"),
    ("namespace ending in a hyphen", "spiffe://cluster.local/ns/mesh-/sa/web"),
    ("namespace of 64 characters", f"spiffe://cluster.local/ns/{'a' * 64}/sa/web"),
    ("service account of 254 characters", f"spiffe://cluster.local/ns/mesh/sa/{'a' * 254}"),
    ("node identity", "spiffe://cluster.local/meshlet/node/node1"),
    ("port in trust domain", "spiffe://cluster.local:443/ns/mesh/sa/web"),
    ("userinfo in trust domain", "spiffe://evil@cluster.local/ns/mesh/sa/web"),
    ("query", WEB + "?x=1"),
    ("fragment", WEB + "#x"),
]


@pytest.mark.parametrize(("what", "uri"), HOSTILE_URIS, ids=[w for w, _ in HOSTILE_URIS])
def test_parse_spiffe_id_refuses(what: str, uri: str) -> None:
    with pytest.raises(IdentityError) as err:
        parse_spiffe_id(uri)
    assert repr(uri) in str(err.value), "the message names the input, escaped"


@pytest.mark.parametrize(
    "uri",
    [
        WEB,
        "spiffe://td.test/ns/default/sa/default",
        "spiffe://my_td-1.example/ns/a/sa/b",
        "spiffe://cluster.local/ns/0/sa/web.v1-2",
        f"spiffe://cluster.local/ns/{'a' * 63}/sa/{'b' * 63}.{'c' * 63}",
    ],
)
def test_parse_spiffe_id_round_trips_what_it_accepts(uri: str) -> None:
    identity = parse_spiffe_id(uri)
    assert identity.uri == uri
    assert spiffe_id(identity.trust_domain, identity.namespace, identity.service_account) == uri


def test_parse_spiffe_id_splits_the_parts() -> None:
    assert parse_spiffe_id(WEB) == WorkloadIdentity("cluster.local", "mesh", "web")
    assert parse_spiffe_id(WEB).principal == "cluster.local/ns/mesh/sa/web"


@pytest.mark.parametrize(
    ("trust_domain", "namespace", "service_account", "part"),
    [
        ("cluster.local", "mesh", "web\n", "service account"),
        ("cluster.local", "mesh", "web\x00", "service account"),
        ("cluster.local", "mesh", "w\u0435b", "service account"),
        ("cluster.local", "mesh", "\uff57\uff45\uff42", "service account"),
        ("cluster.local", "mesh", "web/x", "service account"),
        ("cluster.local", "mesh", "", "service account"),
        ("cluster.local", "mesh\n", "web", "namespace"),
        ("cluster.local", "m\u0435sh", "web", "namespace"),
        ("cluster.local", "mesh/sa/x", "web", "namespace"),
        ("cluster.local", "Mesh", "web", "namespace"),
        ("cluster.local\n", "mesh", "web", "trust domain"),
        ("cluster.local/ns/x", "mesh", "web", "trust domain"),
        ("cluster.l\u043ecal", "mesh", "web", "trust domain"),
        ("", "mesh", "web", "trust domain"),
    ],
)
def test_spiffe_id_refuses_a_bad_part_naming_it(
    trust_domain: str, namespace: str, service_account: str, part: str
) -> None:
    with pytest.raises(IdentityError, match=part):
        spiffe_id(trust_domain, namespace, service_account)
    with pytest.raises(IdentityError, match=part):
        workload_identity(trust_domain, namespace, service_account)


@pytest.mark.parametrize(
    "text",
    [
        "\u0668\u0660\u0668\u0660",  # '٨٠٨٠': int() reads it as 8080
        "\uff18\uff10\uff18\uff10",  # fullwidth '８０８０'
        "\u00b2",  # superscript two: isdigit() says yes, int() raises
        "8080\n",
        "\n8080",
        " 8080",
        "8080 ",
        "8080\x00",
        "+80",
        "-80",
        "0x50",
        "8_080",
        "80.0",
        "1e3",
        "",
        "0",
        "00000",
        "65536",
        "99999",
        "000080",  # six digits
    ],
)
def test_parse_port_refuses(text: str) -> None:
    with pytest.raises(IdentityError, match="ASCII digits"):
        parse_port(text)


@pytest.mark.parametrize(("text", "port"), [("1", 1), ("80", 80), ("8080", 8080), ("65535", 65535), ("08080", 8080)])
def test_parse_port_reads_ascii_digits(text: str, port: int) -> None:
    assert parse_port(text) == port
