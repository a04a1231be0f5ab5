"""Fuzz the CA's signing path as a node reaches it: `POST /v1/certificates` {"csr": PEM}, through
`CertificateService.handle` (identity checks, the node's pods) and `CertificateAuthority.sign_csr`.

CSRs are built, then damaged: keys of every kind (P-256, P-384, RSA, Ed25519), SANs naming the node's own
identity, another namespace or trust domain, a node identity, several URIs, DNS and IP names, or raw SAN bytes
with NUL, CRLF, non-ASCII and wrong tags (signed correctly, so they reach the SAN checks); the DER with bytes
flipped or cut (so the signature or the structure breaks); the PEM with a wrong armour, two blocks, junk; and
request bodies that are not the expected JSON. For any of them:
- the handler answers, never raises: 200, or 4xx/503 with an `error` and a `reason`;
- a certificate is issued only for a pod identity running on the asking node, carries exactly that one URI SAN,
  and the CSR's own key;
- `sign_csr` itself raises nothing but `CAError`.
"""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtensionOID, NameOID
from hypothesis import example, given
from hypothesis import strategies as st

from control.ca import CAError, CertificateAuthority, _new_root
from control.certificates import CertificateService
from control.metrics import ControlMetrics
from control.model.mesh import MeshSettings
from control.sources.base import SourceBatch
from control.store import ConfigStore
from tests.unit.fuzz import fuzz_settings
from tests.unit.fuzz.mesh_objects import MESH_OBJECTS

TD = "cluster.local"
OWN = f"spiffe://{TD}/ns/shop/sa/web"  # web-1 runs on node1 with this identity
NODE = "node1"
_CA_KEY = ec.generate_private_key(ec.SECP256R1())
CA = CertificateAuthority(TD, _CA_KEY, [_new_root(_CA_KEY, TD)])
P256 = [ec.generate_private_key(ec.SECP256R1()) for _ in range(2)]
OTHER_KEYS: list[Any] = [
    ec.generate_private_key(ec.SECP384R1()),
    rsa.generate_private_key(public_exponent=65537, key_size=2048),
    ed25519.Ed25519PrivateKey.generate(),
]
IDENTITIES = [
    OWN, f"spiffe://{TD}/ns/shop/sa/other", f"spiffe://{TD}/ns/kube-system/sa/web", "spiffe://evil.td/ns/shop/sa/web",
    f"spiffe://{TD}/meshlet/node/{NODE}", f"{OWN}\n", f"{OWN}/", f"{OWN}?x=1", f"{OWN}#x", f"SPIFFE://{TD}/ns/shop/sa/web",
    f"spiffe://{TD}/ns/shop/sa/wеb", f"spiffe://{TD}/ns/shop/sa/web%2F", f"spiffe://{TD}//ns/shop/sa/web",
    f"spiffe://{TD.upper()}/ns/shop/sa/web", "spiffe://", "", "x",
]  # fmt: skip


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + _der_len(len(value)) + value


raw_names = st.one_of(
    st.builds(lambda v: _tlv(0x86, v), st.one_of(st.sampled_from([i.encode() for i in IDENTITIES if i.isascii()]),
                                                 st.sampled_from([OWN.encode() + b"\0", OWN.encode() + b"\r\n",
                                                                  OWN.encode().replace(b"web", b"w\xd0\xb5b")]),
                                                 st.binary(max_size=40))),
    st.builds(lambda v: _tlv(0x82, v), st.sampled_from([b"web.shop", b"*", b"\0", b""])),
    st.builds(lambda v: _tlv(0x87, v), st.sampled_from([bytes(4), bytes(16), bytes(5), b""])),
    st.builds(lambda v: _tlv(0xA0, v), st.binary(max_size=20)),  # otherName, usually malformed
    st.binary(min_size=1, max_size=12),  # not even a tag
)  # fmt: skip


@st.composite
def csrs(draw: st.DrawFn) -> bytes:
    """A CSR in PEM, built for a fuzzed request and then maybe damaged."""
    key = draw(st.sampled_from(P256 * 3 + OTHER_KEYS))
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, draw(st.sampled_from(["", "web", OWN[:64]])) or "x")])
        if draw(st.booleans())
        else x509.Name([])
    )
    san = draw(st.integers(0, 3))
    if san <= 1:
        names: list[x509.GeneralName] = [
            x509.UniformResourceIdentifier(u)
            for u in draw(st.lists(st.sampled_from([i for i in IDENTITIES if i.isascii()]), min_size=1, max_size=3))
        ]
        names += [x509.DNSName(d) for d in draw(st.lists(st.sampled_from(["web.shop.svc", "localhost"]), max_size=1))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=draw(st.booleans()))
    elif san == 2:
        raw = _tlv(0x30, b"".join(draw(st.lists(raw_names, min_size=1, max_size=3))))
        builder = builder.add_extension(
            x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, raw), critical=False
        )
    # Deterministic ECDSA (RFC 6979): the same draws must give the same bytes, or hypothesis cannot replay them.
    if isinstance(key, ed25519.Ed25519PrivateKey):
        csr = builder.sign(key, None)
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        csr = builder.sign(key, hashes.SHA256(), ecdsa_deterministic=True)
    else:
        csr = builder.sign(key, hashes.SHA256())
    der = csr.public_bytes(serialization.Encoding.DER)
    damage = draw(st.integers(0, 9))  # hypothesis favours 0: most CSRs arrive as built
    if damage == 7:
        flipped = bytearray(der)
        for _ in range(draw(st.integers(1, 4))):
            flipped[draw(st.integers(0, len(flipped) - 1))] ^= draw(st.integers(1, 255))
        der = bytes(flipped)
    elif damage == 8:
        der = der[: draw(st.integers(0, len(der)))]
    pem = b"-----BEGIN CERTIFICATE REQUEST-----\n" + base64.encodebytes(der) + b"-----END CERTIFICATE REQUEST-----\n"
    if damage == 9:
        pem = draw(st.sampled_from([
            pem.replace(b"CERTIFICATE REQUEST", b"CERTIFICATE"), pem + pem, b"junk\n" + pem, pem[:-20],
            pem.replace(b"\n", b"\r\n"), pem.replace(b"M", b"*", 1), b"", b"\0" * 10,
        ]))  # fmt: skip
    return pem


VERSION_2_CSR = b"""-----BEGIN CERTIFICATE REQUEST-----
MIG6MGICAQEwADBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABFJkKyyoA5/VnK/DnN7PUYp7Kehv
heDHWSz4To6mrlyMViByuxnxK3+m9dKZ8grKzXX7tCLr2821nz7O6XyC+6SgADAKBggqhkjOPQQD
AgNIADBFAiEAoE4Og1BFP846x9PFqDBv0IsyTfNVz3nM8ZCet4BOhzMCIHK64kFP/zzVZEJ30VKI
3NfKBbGCl6q+rfKU1pCg1Cjk
-----END CERTIFICATE REQUEST-----
"""
"""A P-256 CSR whose version field says 2 (only v1, 0, exists): one flipped bit."""


def _store() -> ConfigStore:
    store = ConfigStore(MeshSettings(trust_domain=TD))
    store.apply([SourceBatch("mesh.yaml", tuple(MESH_OBJECTS))])
    return store


SERVICE = CertificateService(CA, _store(), ControlMetrics(), timedelta(hours=1))


class _Request(dict[str, Any]):
    """The three things the handler reads of an aiohttp request."""

    def __init__(self, body: bytes) -> None:
        super().__init__(node=NODE)
        self.body = body
        self.content_length = len(body)

    async def json(self) -> Any:
        return json.loads(self.body)


def post(body: bytes) -> tuple[int, dict[str, Any]]:
    response = asyncio.run(SERVICE.handle(_Request(body)))  # type: ignore[arg-type]
    assert response.body is not None
    return response.status, json.loads(bytes(response.body))  # type: ignore[arg-type]


def check_issued(answer: dict[str, Any], csr_pem: bytes) -> None:
    """An issued certificate names exactly the node's own pod identity, with the CSR's key."""
    assert answer["spiffeId"] == OWN
    leaf = x509.load_pem_x509_certificate(answer["certificateChain"][0].encode())
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [n.value for n in names] == [OWN] and isinstance(names[0], x509.UniformResourceIdentifier)
    csr = x509.load_pem_x509_csr(csr_pem)
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert leaf.public_key().public_bytes(*spki) == csr.public_key().public_bytes(*spki)


@pytest.fixture(autouse=True)
def _quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("CRITICAL", logger="control.certificates")  # one warning per refusal, by design


@fuzz_settings(200)
@given(pem=csrs())
@example(pem=b"-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n")
@example(pem=VERSION_2_CSR)  # found by this fuzzer: InvalidVersion (no ValueError) escaped the handler, a 500
def test_a_hostile_csr_is_refused_with_a_reason_or_signed_for_the_nodes_own_pod(pem: bytes) -> None:
    status, answer = post(json.dumps({"csr": pem.decode("latin-1")}).encode())
    if status == 200:
        check_issued(answer, pem)
    else:
        assert status in (400, 403, 413) and answer["error"] and answer["reason"], (status, answer)


json_bodies = st.one_of(
    st.none(),
    st.integers(),
    st.lists(st.text(max_size=3), max_size=2),
    st.dictionaries(st.sampled_from(["csr", "x"]), st.one_of(st.none(), st.integers(), st.text(max_size=8))),
)


@fuzz_settings(100)
@given(body=st.one_of(st.binary(max_size=40), st.builds(lambda v: json.dumps(v).encode(), json_bodies)))
@example(body=b'{"csr": "\\ud800"}')
@example(body=b"[" * 16_000)  # found by this fuzzer: RecursionError escaped the handler, a 500 and a traceback
def test_a_body_that_is_not_the_expected_json_is_a_400(body: bytes) -> None:
    status, answer = post(body)
    assert status == 400 and answer["reason"] in ("bad_request", "bad_csr"), answer


@fuzz_settings(150)
@given(pem=csrs(), identity=st.sampled_from(IDENTITIES))
@example(pem=VERSION_2_CSR, identity=OWN)
def test_sign_csr_raises_only_ca_error_and_signs_only_the_identity_asked(pem: bytes, identity: str) -> None:
    try:
        issued = CA.sign_csr(pem, identity, timedelta(hours=1))
    except CAError as exc:
        assert str(exc)
        return
    leaf = x509.load_pem_x509_certificate(issued.chain_pem[0].encode())
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [n.value for n in names] == [identity] == [issued.spiffe_id]
