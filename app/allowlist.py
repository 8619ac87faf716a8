"""Caller address allow-lists (addresses or CIDR networks)."""

from __future__ import annotations

import ipaddress

# Decisions cached per caller address; cleared when full, so a scan of many addresses stays bounded.
DECISIONS_MAX = 4096


class AllowList:
    def __init__(self, entries: list[str]) -> None:
        self.networks = [ipaddress.ip_network(entry, strict=False) for entry in entries]
        self.decisions: dict[str, bool] = {}

    def allows(self, host: str | None) -> bool:
        if host is None:
            return False
        decision = self.decisions.get(host)
        if decision is None:
            decision = self._check(host)
            if len(self.decisions) >= DECISIONS_MAX:
                self.decisions.clear()
            self.decisions[host] = decision
        return decision

    def _check(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)
