"""Writers of weft_ipcache and weft_policy: a compiled PolicyState -> the maps.

Only the difference to what is written is written. The order keeps every
packet decision valid at every instant: new identities and allow entries
first (`write`), then the endpoints' isolation flags (the endpoint manager),
then the removal of entries nothing wants any more (`prune`). A restarting
agent reads both maps back and so rewrites nothing that is still right.

Key and value types are BCC's, derived from bpf/lib/policy.h.
"""
from __future__ import annotations

from ..model.policy import PolicyKey, PolicyState
from .errors import DatapathError
from .maps import be32_to_ip, delete_entry, ip_to_be32, write_entry

# (ep_id, identity, dir, proto, port, prefix)
MapPolicyKey = tuple[int, int, int, int, int, int]


class PolicyMaps:
    POLICY = "weft_policy"
    IPCACHE = "weft_ipcache"

    def __init__(self, programs):
        cfg = programs.config
        self.policy = programs.table(self.POLICY)
        self.ipcache = programs.table(self.IPCACHE)
        self.policy_size, self.ipcache_size = cfg.policy_map_size, cfg.ipcache_map_size
        self.written_policy: dict[MapPolicyKey, int] = {
            (k.ep_id, k.identity, k.dir, k.proto, k.dport, k.prefix): v.policy_id
            for k, v in self.policy.items()}
        self.written_ipcache: dict[tuple[str, int], tuple[int, int]] = {
            (be32_to_ip(k.ip), k.prefixlen): (v.identity, v.cidr_identity) for k, v in self.ipcache.items()}
        self._wanted_policy: dict[MapPolicyKey, int] = {}
        self._wanted_ipcache: dict[tuple[str, int], tuple[int, int]] = {}
        self.errors: list[str] = []
        self.failed_writes: list[DatapathError] = []

    def write(self, state: PolicyState, ep_ids: dict[str, int]) -> int:
        """Write what `state` adds or changes; return how many entries were written."""
        self._wanted_ipcache = dict(state.ipcache)
        self._wanted_policy = {_map_key(k, ep_ids[k[0]]): v for k, v in state.entries.items() if k[0] in ep_ids}
        self.errors = []
        written = 0
        for key, value in self._wanted_ipcache.items():
            if self.written_ipcache.get(key) != value and self._put_ipcache(key, value):
                written += 1
        for key, value in self._wanted_policy.items():
            if self.written_policy.get(key) != value and self._put_policy(key, value):
                written += 1
        return written

    def prune(self) -> int:
        """Delete what the last `write` no longer wants; return how many."""
        stale_policy = [k for k in self.written_policy if k not in self._wanted_policy]
        for key in stale_policy:
            delete_entry(self.policy, self._policy_ckey(key))
            del self.written_policy[key]
        stale_ipcache = [k for k in self.written_ipcache if k not in self._wanted_ipcache]
        for key in stale_ipcache:
            delete_entry(self.ipcache, self.ipcache.Key(key[1], ip_to_be32(key[0])))
            del self.written_ipcache[key]
        return len(stale_policy) + len(stale_ipcache)

    def _policy_ckey(self, key: MapPolicyKey):
        ep_id, identity, direction, proto, port, prefix = key
        return self.policy.Key(ep_id, identity, direction, proto, port, prefix)

    def _put_policy(self, key: MapPolicyKey, policy_id: int) -> bool:
        try:
            write_entry(self.policy, self._policy_ckey(key), self.policy.Leaf(policy_id, 0),
                        self.POLICY, self.policy_size)
        except DatapathError as exc:
            return self._failed(exc)
        self.written_policy[key] = policy_id
        return True

    def _put_ipcache(self, key: tuple[str, int], value: tuple[int, int]) -> bool:
        try:
            write_entry(self.ipcache, self.ipcache.Key(key[1], ip_to_be32(key[0])),
                        self.ipcache.Leaf(*value), self.IPCACHE, self.ipcache_size)
        except DatapathError as exc:
            return self._failed(exc)
        self.written_ipcache[key] = value
        return True

    def _failed(self, exc: DatapathError) -> bool:
        message = str(exc)
        if message not in self.errors:
            self.errors.append(message)
        self.failed_writes.append(exc)
        return False


def _map_key(key: PolicyKey, ep_id: int) -> MapPolicyKey:
    _, identity, direction, proto, port, prefix = key
    return ep_id, identity, direction, proto, port, prefix
