"""Consumer groups, as ``kafka-consumer-groups --describe`` shows them: members, offsets, lag.

Public names (helper modules import these; keep them stable). ``admin`` is a confluent_kafka
``AdminClient`` (``services.opsctl.common.admin(settings)``); ``tp`` is a ``(topic, partition)`` tuple.

    ``Member``         member_id, client_id, host, group_instance_id, partitions: list[tp]
    ``PartitionLag``   topic, partition, committed (None = no commit), end, lag (None when not
                       committed: the whole partition is unread from the group's point of view, see
                       ``lag_or_end``), owner (client id of the member it is assigned to, or None)
    ``GroupInfo``      group_id, state (e.g. Stable, Empty, Dead), protocol (assignor), members,
                       partitions: list[PartitionLag]; ``.live`` (has members), ``.total_lag``,
                       ``.lag_by_topic()`` -> {topic: lag}, ``.topics()``
    ``list_group_ids(admin)``                        every group the cluster knows
    ``describe_group(admin, group_id, topics=None)`` GroupInfo; ``UnknownGroup`` when the cluster
                                                     has neither members nor commits for it
    ``describe_groups(admin, group_ids, topics=None)`` {group: GroupInfo | UnknownGroup}
    ``members(admin, group_id)``                     list[Member] (empty = no live member)
    ``live_members(admin, group_id)``                the same; for "refuses while the group is live"
    ``committed_offsets(admin, group_id)``           {tp: offset} of every committed partition
    ``end_offsets(admin, tps)`` / ``earliest_offsets(admin, tps)`` {tp: offset}
    ``offsets_for_time(admin, tps, when_ms)``       {tp: first offset with timestamp >= when_ms, or the
                                                     end offset when there is none}
    ``topic_partition_list(admin, topic)``          [tp, ...]; ``UnknownTopic`` if missing
    ``group_state_name(state)``                     "Stable", "Empty", ...
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.opsctl.common import UnknownGroup, UnknownTopic

TP = tuple[str, int]
TIMEOUT = 15.0


@dataclass(frozen=True)
class Member:
    member_id: str
    client_id: str
    host: str
    partitions: list[TP] = field(default_factory=list)
    group_instance_id: str | None = None


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int | None
    end: int
    lag: int | None
    owner: str | None = None

    @property
    def lag_or_end(self) -> int:
        """The lag, counting an uncommitted partition as all of it unread."""
        return self.lag if self.lag is not None else self.end


@dataclass(frozen=True)
class GroupInfo:
    group_id: str
    state: str
    protocol: str
    members: list[Member]
    partitions: list[PartitionLag]

    @property
    def live(self) -> bool:
        return bool(self.members)

    @property
    def total_lag(self) -> int:
        return sum(p.lag or 0 for p in self.partitions)

    def topics(self) -> list[str]:
        return sorted({p.topic for p in self.partitions} | {t for m in self.members for t, _ in m.partitions})

    def lag_by_topic(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.partitions:
            out[p.topic] = out.get(p.topic, 0) + (p.lag or 0)
        return out


def group_state_name(state: Any) -> str:
    name = getattr(state, "name", None) or str(state)
    return {"STABLE": "Stable", "EMPTY": "Empty", "DEAD": "Dead", "UNKNOWN": "Unknown",
            "PREPARING_REBALANCING": "PreparingRebalance",
            "COMPLETING_REBALANCING": "CompletingRebalance"}.get(name.upper(), name)


def list_group_ids(admin: Any) -> list[str]:
    result = admin.list_consumer_groups(request_timeout=TIMEOUT).result()
    return sorted(g.group_id for g in result.valid)


def _members(description: Any) -> list[Member]:
    out = []
    for m in description.members or []:
        tps = sorted((tp.topic, tp.partition) for tp in (m.assignment.topic_partitions if m.assignment else []))
        out.append(Member(m.member_id, m.client_id, m.host, tps, m.group_instance_id))
    return sorted(out, key=lambda m: (m.client_id, m.member_id))


def members(admin: Any, group_id: str) -> list[Member]:
    """The live members of ``group_id`` (empty when none, or the group is unknown)."""
    description = admin.describe_consumer_groups([group_id], request_timeout=TIMEOUT)[group_id].result()
    return _members(description)


live_members = members


def committed_offsets(admin: Any, group_id: str) -> dict[TP, int]:
    """Every partition ``group_id`` has committed an offset for."""
    from confluent_kafka import ConsumerGroupTopicPartitions

    futures = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group_id)], request_timeout=TIMEOUT)
    result = futures[group_id].result()
    return {(tp.topic, tp.partition): tp.offset for tp in result.topic_partitions or [] if tp.offset >= 0}


def _list_offsets(admin: Any, tps: Iterable[TP], spec: Any) -> dict[TP, int]:
    from confluent_kafka import TopicPartition

    request = {TopicPartition(t, p): spec for t, p in tps}
    if not request:
        return {}
    out = {}
    for tp, fut in admin.list_offsets(request, request_timeout=TIMEOUT).items():
        out[(tp.topic, tp.partition)] = fut.result().offset
    return out


def end_offsets(admin: Any, tps: Iterable[TP]) -> dict[TP, int]:
    from confluent_kafka.admin import OffsetSpec

    return _list_offsets(admin, tps, OffsetSpec.latest())


def earliest_offsets(admin: Any, tps: Iterable[TP]) -> dict[TP, int]:
    from confluent_kafka.admin import OffsetSpec

    return _list_offsets(admin, tps, OffsetSpec.earliest())


def offsets_for_time(admin: Any, tps: Iterable[TP], when_ms: int) -> dict[TP, int]:
    """For each partition the first offset whose timestamp is at or after ``when_ms``; the end offset
    when no record is that new."""
    from confluent_kafka.admin import OffsetSpec

    tps = list(tps)
    found = _list_offsets(admin, tps, OffsetSpec.for_timestamp(when_ms))
    missing = [tp for tp, off in found.items() if off < 0]
    if missing:
        found.update(end_offsets(admin, missing))
    return found


def topic_partition_list(admin: Any, topic: str) -> list[TP]:
    md = admin.list_topics(timeout=TIMEOUT)
    meta = md.topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        raise UnknownTopic(f"unknown topic '{topic}' (see `trainee-notify topics list`)")
    return [(topic, p) for p in sorted(meta.partitions)]


def _existing_topics(admin: Any) -> dict[str, list[int]]:
    md = admin.list_topics(timeout=TIMEOUT)
    return {name: sorted(meta.partitions) for name, meta in md.topics.items() if meta.error is None}


def describe_groups(admin: Any, group_ids: Sequence[str],
                    topics: Sequence[str] | None = None) -> dict[str, GroupInfo | UnknownGroup]:
    """Describe several groups with one metadata and one end-offset request."""
    descriptions = admin.describe_consumer_groups(list(group_ids), request_timeout=TIMEOUT)
    existing = _existing_topics(admin)
    staged: dict[str, tuple[Any, list[Member], dict[TP, int]]] = {}
    wanted: set[TP] = set()
    out: dict[str, GroupInfo | UnknownGroup] = {}
    for gid in group_ids:
        description = descriptions[gid].result()
        mem = _members(description)
        committed = committed_offsets(admin, gid)
        if not mem and not committed:
            out[gid] = UnknownGroup(f"unknown consumer group '{gid}' (no members, no committed offsets)")
            continue
        names = set(topics) if topics is not None else (
            {t for t, _ in committed} | {t for m in mem for t, _ in m.partitions})
        tps = {(t, p) for t in names for p in existing.get(t, [])}
        wanted |= tps
        staged[gid] = (description, mem, committed)
    ends = end_offsets(admin, sorted(wanted))
    for gid, (description, mem, committed) in staged.items():
        owner = {tp: m.client_id for m in mem for tp in m.partitions}
        names = set(topics) if topics is not None else (
            {t for t, _ in committed} | {t for m in mem for t, _ in m.partitions})
        rows = []
        for tp in sorted((t, p) for t in names for p in existing.get(t, [])):
            end = ends.get(tp, 0)
            c = committed.get(tp)
            rows.append(PartitionLag(tp[0], tp[1], c, end, None if c is None else max(end - c, 0), owner.get(tp)))
        out[gid] = GroupInfo(gid, group_state_name(description.state), description.partition_assignor or "",
                             mem, rows)
    return out


def describe_group(admin: Any, group_id: str, topics: Sequence[str] | None = None) -> GroupInfo:
    """Members, committed offsets, end offsets and lag of one group; ``UnknownGroup`` if it has none."""
    info = describe_groups(admin, [group_id], topics)[group_id]
    if isinstance(info, UnknownGroup):
        raise info
    return info
