"""What the broker says about our declared topics: partitions, end offsets, retention, cleanup, and the
lag of every consumer group that has offsets on them (``trainee-notify topics describe``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.opsctl import groups
from services.settings import KafkaSettings
from services.topics import declared_topics


@dataclass(frozen=True)
class TopicRow:
    name: str
    exists: bool
    partitions: int | None
    declared_partitions: int
    end_offsets: dict[int, int]
    records: int  # sum over partitions of end - earliest (what retention has left)
    retention_ms: int | None
    cleanup_policy: str | None
    purpose: str
    lag: dict[str, int] = field(default_factory=dict)  # group -> lag on this topic
    issues: list[str] = field(default_factory=list)

    @property
    def end_total(self) -> int:
        return sum(self.end_offsets.values())


def describe(settings: KafkaSettings, admin: Any, topics: list[str] | None = None) -> list[TopicRow]:
    from confluent_kafka.admin import ConfigResource, ResourceType

    specs = declared_topics(settings)
    if topics:
        known = {s.name for s in specs}
        from services.opsctl.common import UnknownTopic

        for t in topics:
            if t not in known:
                raise UnknownTopic(f"unknown topic '{t}' (not declared; see `trainee-notify topics list`)")
        specs = [s for s in specs if s.name in set(topics)]
    md = admin.list_topics(timeout=groups.TIMEOUT).topics
    present = [s for s in specs if s.name in md and md[s.name].error is None]
    tps = [(s.name, p) for s in present for p in sorted(md[s.name].partitions)]
    ends = groups.end_offsets(admin, tps)
    firsts = groups.earliest_offsets(admin, tps)
    resources = [ConfigResource(ResourceType.TOPIC, s.name) for s in present]
    configs: dict[str, dict[str, str]] = {}
    if resources:
        for res, fut in admin.describe_configs(resources, request_timeout=groups.TIMEOUT).items():
            configs[res.name] = {k: v.value for k, v in fut.result().items()}
    lags: dict[str, dict[str, int]] = {}
    group_ids = groups.list_group_ids(admin)
    if group_ids:
        for gid, info in groups.describe_groups(admin, group_ids).items():
            if isinstance(info, groups.GroupInfo):
                for topic, lag in info.lag_by_topic().items():
                    lags.setdefault(topic, {})[gid] = lag
    rows = []
    for s in specs:
        if s not in present:
            rows.append(TopicRow(s.name, False, None, s.partitions, {}, 0, None, None, s.purpose,
                                 issues=["missing: run `trainee-notify topics apply`"]))
            continue
        cfg = configs.get(s.name, {})
        parts = sorted(md[s.name].partitions)
        retention = int(cfg["retention.ms"]) if cfg.get("retention.ms") not in (None, "") else None
        issues = []
        if len(parts) != s.partitions:
            issues.append(f"{len(parts)} partitions, declared {s.partitions}")
        if cfg.get("cleanup.policy") != s.cleanup_policy:
            issues.append(f"cleanup.policy {cfg.get('cleanup.policy')}, declared {s.cleanup_policy}")
        if retention != s.retention_ms:
            issues.append(f"retention.ms {retention}, declared {s.retention_ms}")
        rows.append(TopicRow(
            s.name, True, len(parts), s.partitions, {p: ends[(s.name, p)] for p in parts},
            sum(max(ends[(s.name, p)] - firsts[(s.name, p)], 0) for p in parts), retention,
            cfg.get("cleanup.policy"), s.purpose, dict(sorted(lags.get(s.name, {}).items())), issues))
    return rows
