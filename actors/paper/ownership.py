"""Which executor instance should own which partition: a pure plan, no I/O.

Every ``paper_executor`` instance runs the same plan from what it sees: the
live instances (heartbeats seen within two beat intervals) and the current
holder of each partition lease.  Each live instance's fair share is ``floor``
or ``ceil`` of P/N (the first instances in name order get the ceilings); a live
holder keeps its partitions up to its share, and the rest go, in partition
order, to the instances below their share (in name order).  So the fewest
partitions move, and every instance computes the same answer from the same
view.  From that, for itself:

- **claim** a free partition it is the target of (or any partition left free
  longer than ``grace``: nobody else is taking it);
- **take over** a partition it is the target of whose holder is not live, once
  it has watched the beats long enough to know (``observed``);
- **release** a partition it holds whose target is another live instance, so a
  newcomer gets its share (the target then claims it).

A holder that only looked dead (a pause, a lost beat) is fenced by the epoch
when it next writes, and the plan gives it back its share later.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Holder:
    owner: str
    revision: int  # the lease's revision: the epoch


@dataclass(frozen=True, slots=True)
class Plan:
    claim: list[int] = field(default_factory=list)
    take_over: list[tuple[int, int]] = field(default_factory=list)  # (partition, seen revision)
    release: list[int] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.claim or self.take_over or self.release)


def targets(
    live: Iterable[str], partitions: int, holders: Mapping[int, Holder] | None = None
) -> dict[int, str]:
    members = sorted(set(live))
    if not members:
        return {}
    base, extra = divmod(partitions, len(members))
    quota = {m: base + (1 if i < extra else 0) for i, m in enumerate(members)}
    count = dict.fromkeys(members, 0)
    out: dict[int, str] = {}
    for p in range(partitions):  # live holders keep what fits their share
        holder = (holders or {}).get(p)
        if (
            holder is not None
            and holder.owner in quota
            and count[holder.owner] < quota[holder.owner]
        ):
            out[p] = holder.owner
            count[holder.owner] += 1
    for p in range(partitions):
        if p not in out:
            m = next(m for m in members if count[m] < quota[m])
            out[p] = m
            count[m] += 1
    return out


def plan(
    me: str,
    live: Iterable[str],
    holders: Mapping[int, Holder],
    partitions: int,
    *,
    observed: bool,
    free_for: Mapping[int, float] | None = None,
    grace: float = 2.0,
) -> Plan:
    """What ``me`` should do now; ``free_for`` says how long each free partition has
    been free (seconds)."""
    alive = set(live) | {me}
    target = targets(alive, partitions, holders)
    out = Plan()
    for p in range(partitions):
        holder = holders.get(p)
        mine = target[p] == me
        if holder is None:
            if mine or (free_for or {}).get(p, 0.0) > grace:
                out.claim.append(p)
        elif holder.owner == me:
            if not mine:
                out.release.append(p)
        elif mine and observed and holder.owner not in alive:
            out.take_over.append((p, holder.revision))
    return out
