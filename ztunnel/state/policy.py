"""AuthorizationPolicy and PeerAuthentication as the node proxy holds them: read once from control's wire items
with the shared types of `meshlet_contracts.policy`, and indexed so that a decision looks only at the policies
that can apply.

A workload is governed by the policies of its own namespace and of the root namespaces, so both collections are
indexed by namespace; within a namespace, policies are kept sorted by name, with those that select every
workload apart from those with a selector. Decisions (`ztunnel.rbac`) and their reasons then do not depend on
the order control sent the items in.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar, overload

from meshlet_contracts.policy import (
    L4_CONDITION_KEYS,
    Action,
    AuthorizationPolicy,
    Condition,
    MtlsMode,
    Network,
    Operation,
    PeerAuthentication,
    PolicyError,
    Rule,
    Selector,
    Source,
    selects,
)

__all__ = [
    "L4_CONDITION_KEYS",
    "Action",
    "AuthorizationPolicies",
    "AuthorizationPolicy",
    "Condition",
    "MtlsMode",
    "Network",
    "Operation",
    "PeerAuthentication",
    "PeerAuthentications",
    "PolicyError",
    "PolicySet",
    "Rule",
    "Selector",
    "Source",
    "selects",
]


P = TypeVar("P", AuthorizationPolicy, PeerAuthentication)


@dataclass(frozen=True, slots=True)
class _Indexed(Sequence[P]):
    """Policies of one kind, sorted by `namespace/name`, and per namespace split into those that select every
    workload and those with a selector (each sorted by name)."""

    policies: tuple[P, ...] = ()
    _by_namespace: Mapping[str, tuple[tuple[P, ...], tuple[P, ...]]] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.policies, key=lambda p: (p.namespace, p.name)))
        grouped: dict[str, list[P]] = defaultdict(list)
        for policy in ordered:
            grouped[policy.namespace].append(policy)
        index = {
            ns: (tuple(p for p in ps if p.selector is None), tuple(p for p in ps if p.selector is not None))
            for ns, ps in grouped.items()
        }
        object.__setattr__(self, "policies", ordered)
        object.__setattr__(self, "_by_namespace", index)

    def _groups(self, namespace: str) -> tuple[tuple[P, ...], tuple[P, ...]]:
        return self._by_namespace.get(namespace, ((), ()))

    def __iter__(self) -> Iterator[P]:
        return iter(self.policies)

    def __len__(self) -> int:
        return len(self.policies)

    @overload
    def __getitem__(self, index: int) -> P: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[P]: ...

    def __getitem__(self, index: int | slice) -> P | Sequence[P]:
        return self.policies[index]


@dataclass(frozen=True, slots=True)
class AuthorizationPolicies(_Indexed[AuthorizationPolicy]):
    """Every AuthorizationPolicy of one config version."""

    def applicable(
        self, namespace: str, labels: Mapping[str, str], roots: tuple[str, ...]
    ) -> list[AuthorizationPolicy]:
        """The policies that apply to a workload, sorted by `namespace/name`: those of its namespace and of the
        root namespaces that select every workload or whose selector matches its labels."""
        out: list[AuthorizationPolicy] = []
        for ns in sorted({namespace, *roots}):
            everyone, selected = self._groups(ns)
            chosen = [*everyone, *(p for p in selected if selects(p.selector, labels))]
            # Both parts are sorted by name already; only a mix of the two needs sorting again.
            out.extend(sorted(chosen, key=lambda p: p.name) if everyone and len(chosen) > len(everyone) else chosen)
        return out


@dataclass(frozen=True, slots=True)
class PeerAuthentications(_Indexed[PeerAuthentication]):
    """Every PeerAuthentication of one config version."""

    def levels(
        self, namespace: str, labels: Mapping[str, str], roots: tuple[str, ...]
    ) -> tuple[PeerAuthentication | None, PeerAuthentication | None, tuple[PeerAuthentication, ...]]:
        """The policies that may set a workload's mode, most specific first: the first by name of its namespace
        selecting it, the first of its namespace without a selector, then each root namespace's first without one,
        in the roots' order (a root's UNSET defers to the next root)."""
        own_everyone, own_selected = self._groups(namespace)
        mesh_wide = tuple(everyone[0] for root in roots if (everyone := self._groups(root)[0]))
        workload = next((p for p in own_selected if selects(p.selector, labels)), None)
        return workload, next(iter(own_everyone), None), mesh_wide


@dataclass(frozen=True, slots=True)
class PolicySet:
    """Every policy of one config version, converted once and indexed."""

    authorization: AuthorizationPolicies = field(default_factory=AuthorizationPolicies)
    peer_authentication: PeerAuthentications = field(default_factory=PeerAuthentications)

    @classmethod
    def from_wire(cls, authz_items: Iterable[object], peer_auth_items: Iterable[object]) -> PolicySet:
        """Raises PolicyError naming the policy and the field of the first item that does not follow the schema."""
        return cls(
            AuthorizationPolicies(tuple(map(AuthorizationPolicy.from_wire, authz_items))),
            PeerAuthentications(tuple(map(PeerAuthentication.from_wire, peer_auth_items))),
        )
