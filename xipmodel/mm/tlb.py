"""Model of a translation lookaside buffer: a small cache of vpn → (pfn, flags).

    TLB(entries, ways)   `entries // ways` sets of `ways` entries; set = vpn % sets
                         (ways == entries: fully associative, one set)
    policy               replacement within a set: "lru", "fifo" or "random" (seeded)
    asid_tagged          entries carry the address-space id (x86 PCID, RISC-V ASID),
                         so a context switch keeps them; untagged, switch() flushes all

State is plain: one insertion-ordered dict per set, key → (pfn, flags), where the
key is `asid << 64 | vpn` (tagged) or `vpn` (untagged). Dict order is the
replacement order: the first key is the LRU (or oldest) entry.

A miss is a returned None, never an exception; filling the TLB after the walk
is the caller's `insert` (a hardware-walked TLB does the same on its own).
Not modelled: huge-page entries, separate instruction/data TLBs, global pages.
"""

from __future__ import annotations

import copy
import random
from typing import Literal

import numpy as np
import numpy.typing as npt

from xipmodel.errors import ParameterError

__all__ = ["ASID_SHIFT", "POLICIES", "TLB", "Policy"]

Policy = Literal["lru", "fifo", "random"]
POLICIES: tuple[str, ...] = ("lru", "fifo", "random")
ASID_SHIFT = 64  # key = asid << 64 | vpn: no VPN of any preset reaches bit 64


class TLB:
    """A set-associative, optionally ASID-tagged TLB with hit/miss counters."""

    def __init__(self, entries: int, ways: int | None = None, policy: Policy = "lru",
                 asid_tagged: bool = True, seed: int = 0) -> None:
        ways = entries if ways is None else ways
        if entries < 1:
            raise ParameterError(f"TLB: entries={entries!r}: must be >= 1")
        if not 1 <= ways <= entries or entries % ways:
            raise ParameterError(f"TLB: ways={ways!r}: must divide entries={entries}")
        if policy not in POLICIES:
            raise ParameterError(f"TLB: policy={policy!r}: expected one of {POLICIES}")
        self.entries = entries
        self.ways = ways
        self.nsets = entries // ways
        self.policy = policy
        self.asid_tagged = asid_tagged
        self.sets: list[dict[int, tuple[int, int]]] = [{} for _ in range(self.nsets)]
        self.asid = 0  # the address space currently running
        self.rng = random.Random(seed)
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.flushes = 0
        self.invalidations = 0  # entries dropped one at a time (invalidate)
        self.switches = 0

    def copy(self) -> TLB:
        """The same entries in the same order, counters and random state (a cloned guest's).

        The sets are copied, not their (pfn, flags) tuples of ints: nothing changes those.
        """
        new = copy.copy(self)
        new.sets = [dict(s) for s in self.sets]
        new.rng = random.Random()
        new.rng.setstate(self.rng.getstate())
        return new

    def _key(self, asid: int, vpn: int) -> int:
        """The dict key of (asid, vpn); an untagged TLB only answers for the current asid."""
        if asid < 0 or vpn < 0 or vpn >> ASID_SHIFT:
            raise ParameterError(f"TLB: asid={asid!r} vpn={vpn!r}: must be >= 0 and vpn < 2**64")
        if self.asid_tagged:
            return asid << ASID_SHIFT | vpn
        # An untagged TLB holds only the current address space's entries.
        if asid != self.asid:
            raise RuntimeError(f"TLB: asid {asid} is not current ({self.asid}); switch() first")
        return vpn

    def _victim(self, s: dict[int, tuple[int, int]]) -> int:
        """The key to evict from a full set: its first (LRU / oldest) key, or a random one."""
        if self.policy == "random":
            return list(s)[self.rng.randrange(len(s))]
        return next(iter(s))

    def lookup(self, asid: int, vpn: int) -> tuple[int, int] | None:
        """(pfn, flags) cached for (asid, vpn), or None on a miss; counts the hit or miss."""
        key = self._key(asid, vpn)
        s = self.sets[vpn % self.nsets]
        entry = s.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        if self.policy == "lru":
            del s[key]  # most recently used goes to the end
            s[key] = entry
        return entry

    def insert(self, asid: int, vpn: int, pfn: int, flags: int = 0) -> tuple[int, int] | None:
        """Cache (asid, vpn) → (pfn, flags) after a walk; returns the evicted (asid, vpn) if any."""
        key = self._key(asid, vpn)
        s = self.sets[vpn % self.nsets]
        # Already cached (a refill after a PTE change)? Replace it in place of a new entry.
        if key in s:
            if self.policy == "lru":
                del s[key]
            s[key] = (pfn, flags)
            return None
        victim = None
        if len(s) >= self.ways:
            victim = self._victim(s)
            del s[victim]
            self.evictions += 1
        s[key] = (pfn, flags)
        if victim is None:
            return None
        return (victim >> ASID_SHIFT, victim & ((1 << ASID_SHIFT) - 1)) if self.asid_tagged \
            else (self.asid, victim)

    def invalidate(self, asid: int, vpn: int) -> bool:
        """Drop one entry, like invlpg / sfence.vma after a PTE change (CoW, unmap); found?"""
        if not self.asid_tagged and asid != self.asid:
            return False  # an untagged TLB holds nothing of another address space
        if self.sets[vpn % self.nsets].pop(self._key(asid, vpn), None) is None:
            return False
        self.invalidations += 1
        return True

    def flush(self, asid: int | None = None) -> int:
        """Drop every entry, or only `asid`'s; returns how many were dropped."""
        self.flushes += 1
        dropped = 0
        for s in self.sets:
            if asid is None or not self.asid_tagged:
                if asid is not None and asid != self.asid:
                    continue  # untagged entries all belong to the current address space
                dropped += len(s)
                s.clear()
            else:
                gone = [k for k in s if k >> ASID_SHIFT == asid]
                for k in gone:
                    del s[k]
                dropped += len(gone)
        return dropped

    def switch(self, asid: int) -> None:
        """Context switch to `asid` (a CR3 / satp write): an untagged TLB is flushed."""
        if asid < 0:
            raise ParameterError(f"TLB.switch: asid={asid!r}: must be >= 0")
        if asid == self.asid:
            return
        self.switches += 1
        if not self.asid_tagged:
            self.flush()
        self.asid = asid

    def run(self, asids: int | npt.ArrayLike, vpns: npt.ArrayLike,
            pfns: npt.ArrayLike | None = None) -> npt.NDArray[np.bool_]:
        """Replay a reference trace: lookup, and insert on a miss; returns the hit mask.

        `asids` is one id or one per reference; a change of id between references
        is a context switch. The pfn cached on a miss comes from `pfns` (else -1,
        "filled by a walk not modelled here"). Counters advance as with lookup.
        """
        v = np.asarray(vpns, dtype=np.int64).reshape(-1)
        a = np.broadcast_to(np.asarray(asids, dtype=np.int64), v.shape)
        f = np.full(v.shape, -1, dtype=np.int64) if pfns is None else \
            np.broadcast_to(np.asarray(pfns, dtype=np.int64), v.shape)
        if v.size and (int(v.min()) < 0 or int(a.min()) < 0):
            raise ParameterError("TLB.run: asids and vpns must be >= 0")
        hit = bytearray(v.size)
        sets, nsets, ways = self.sets, self.nsets, self.ways
        lru, fifo, tagged = self.policy == "lru", self.policy == "fifo", self.asid_tagged
        cur = self.asid
        nhits = evictions = 0
        for i, (asid, vpn, pfn) in enumerate(zip(a.tolist(), v.tolist(), f.tolist(),
                                                 strict=True)):
            if asid != cur:
                self.switch(asid)
                cur = asid
            key = asid << ASID_SHIFT | vpn if tagged else vpn
            s = sets[vpn % nsets]
            if key in s:
                hit[i] = 1
                nhits += 1
                if lru:
                    s[key] = s.pop(key)
                continue
            if len(s) >= ways:
                del s[next(iter(s)) if lru or fifo else self._victim(s)]
                evictions += 1
            s[key] = (pfn, 0)
        self.hits += nhits
        self.misses += v.size - nhits
        self.evictions += evictions
        return np.frombuffer(bytes(hit), dtype=np.uint8).astype(bool)

    def __len__(self) -> int:
        """Entries currently cached."""
        return sum(len(s) for s in self.sets)

    def contents(self) -> list[tuple[int, int, int, int, int]]:
        """(set, asid, vpn, pfn, flags) for every entry, each set in replacement order."""
        out = []
        for n, s in enumerate(self.sets):
            for key, (pfn, flags) in s.items():
                asid = key >> ASID_SHIFT if self.asid_tagged else self.asid
                out.append((n, asid, key & ((1 << ASID_SHIFT) - 1), pfn, flags))
        return out

    @property
    def hit_ratio(self) -> float:
        """Hits over lookups so far (0.0 before the first)."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0
