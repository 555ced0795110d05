"""``trainee-notify reset-offsets GROUP``: move a consumer group's committed offsets, as
``kafka-consumer-groups --reset-offsets`` does, with a dry run until ``--execute``.

The plan (current -> new offset, records read again or skipped, per partition) is pure code in
:mod:`services.opsctl.plan`; this module reads what it needs from the broker (the group's members and
committed offsets, the partitions' watermarks, offsets by time), prints the plan and, with
``--execute``, writes it with ``AdminClient.alter_consumer_group_offsets``. It refuses while the group
has live members (the broker would refuse too, less clearly): stop them first.

Exit codes: 0 done (or planned), 1 refused or an error (unknown group or topic, live members), 2 bad
options, 3 the broker is unreachable.

Replaying is safe for our groups: the mailer's ledger sends each notification once (a replayed record
whose content differs from what was sent is recorded ``SUPERSEDED``, not sent). Resetting the
aggregator's own group re-applies only events it never applied: its table remembers, per record, the
position last applied, so a replayed event is skipped. To re-derive records after a bug fix, run the
fixed aggregator under a new ``TN_APP_ID`` with an empty data directory (docs/runbook.md, "Replay
after a bug fix"); it emits records with the same ids, and the mailer marks those whose content
changed ``SUPERSEDED``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import typer
from rich.table import Table

from services.opsctl import common, groups
from services.opsctl.audit import audit
from services.opsctl.plan import (
    Mode,
    PartitionState,
    Plan,
    PlanError,
    Target,
    make_plan,
    parse_selection,
    select,
)

EXIT_REFUSED = common.EXIT_ERROR
TOPIC_OPTION = typer.Option([], "--topic", help="topic, repeatable or comma list; TOPIC:0,1 for partitions "
                            "(default: every topic the group has offsets for)")
PARTITION_OPTION = typer.Option([], "--partition", help="partition numbers, repeatable or comma list or range 0-3 "
                                "(default: all)")


def target_of(to_datetime: str | None, to_offset: int | None, shift_by: int | None, to_earliest: bool,
              to_latest: bool, now: dt.datetime | None = None) -> Target:
    given = [name for name, on in (("--to-datetime", to_datetime is not None), ("--to-offset", to_offset is not None),
                                   ("--shift-by", shift_by is not None), ("--to-earliest", to_earliest),
                                   ("--to-latest", to_latest)) if on]
    if len(given) != 1:
        raise common.UsageError("give exactly one of --to-datetime, --to-offset, --shift-by, --to-earliest, "
                                f"--to-latest{f' (got {chr(44).join(given)})' if given else ''}")
    if to_datetime is not None:
        when = common.parse_when(to_datetime, now)
        return Target(Mode.DATETIME, int(when.timestamp() * 1000))
    if to_offset is not None:
        if to_offset < 0:
            raise common.UsageError("--to-offset must be 0 or more")
        return Target(Mode.OFFSET, to_offset)
    if shift_by is not None:
        return Target(Mode.SHIFT, shift_by)
    return Target(Mode.EARLIEST if to_earliest else Mode.LATEST)


def _available(admin: Any) -> dict[str, int]:
    md = admin.list_topics(timeout=groups.TIMEOUT)
    return {name: len(meta.partitions) for name, meta in md.topics.items() if meta.error is None and meta.partitions}


def gather(admin: Any, group: str, target: Target, topics: list[str], partitions: list[str]
           ) -> tuple[list[groups.Member], list[PartitionState]]:
    """The group's live members and, for the selected partitions, what the plan needs."""
    members = groups.members(admin, group)
    committed = groups.committed_offsets(admin, group)
    if not members and not committed:
        known = [g for g in groups.list_group_ids(admin) if not g.startswith("trainee-notify-opsctl-")]
        raise common.UnknownGroup(f"unknown consumer group '{group}' (no members, no committed offsets); "
                                  f"known groups: {', '.join(known) or 'none'}")
    try:
        tps = select(parse_selection(topics, partitions), _available(admin), {t for t, _ in committed})
    except PlanError as exc:
        raise common.OpsError(str(exc)) from None
    low, high = groups.earliest_offsets(admin, tps), groups.end_offsets(admin, tps)
    at_time = (groups.offsets_for_time(admin, tps, target.value)
               if target.mode is Mode.DATETIME and target.value is not None else {})
    states = [PartitionState(t, p, committed.get((t, p)), low[(t, p)], high[(t, p)], at_time.get((t, p)))
              for t, p in tps]
    return members, states


def live_message(group: str, members: list[groups.Member]) -> str:
    who = "; ".join(f"{m.client_id} on {m.host.lstrip('/')} (member {m.member_id})" for m in members)
    return (f"consumer group '{group}' has {len(members)} live member{'s' if len(members) != 1 else ''}: {who}. "
            "Stop them first (offsets can only be reset while the group is empty)")


def execute_plan(admin: Any, group: str, plan: Plan) -> None:
    from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition

    tps = [TopicPartition(r.topic, r.partition, r.new) for r in plan.rows]
    if not tps:
        return
    futures = admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, tps)],
                                                 request_timeout=groups.TIMEOUT)
    try:
        result = futures[group].result()
    except KafkaException as exc:
        err = exc.args[0] if exc.args else exc
        name = getattr(err, "name", lambda: "")()
        if name in ("UNKNOWN_MEMBER_ID", "REBALANCE_IN_PROGRESS", "GROUP_SUBSCRIBED_TO_TOPIC", "ILLEGAL_GENERATION"):
            raise common.OpsError(f"the broker refused to reset '{group}': a member joined meanwhile ({name}); "
                                  "stop it and run again") from None
        raise common.OpsError(f"resetting '{group}' failed: {err}") from None
    failed = [f"{tp.topic}:{tp.partition} ({tp.error})" for tp in result.topic_partitions or [] if tp.error]
    if failed:
        raise common.OpsError(f"resetting '{group}' failed for {', '.join(failed)}")


def plan_json(group: str, plan: Plan, members: list[groups.Member], execute: bool, executed: bool) -> dict[str, Any]:
    return {
        "group": group, "target": {"mode": plan.target.mode.value, "value": plan.target.value},
        "execute": execute, "executed": executed,
        "live_members": [{"member_id": m.member_id, "client_id": m.client_id, "host": m.host} for m in members],
        "partitions": [{"topic": r.topic, "partition": r.partition, "current": r.current, "new": r.new,
                        "low": r.low, "high": r.high, "reread": r.reread, "skipped": r.skipped,
                        "to_read": r.to_read, "note": r.note} for r in plan.rows],
        "totals": {"reread": plan.reread, "skipped": plan.skipped, "partitions": len(plan.rows)},
    }


def print_plan(group: str, plan: Plan, executed: bool) -> None:
    what = "reset" if executed else "plan (dry run: nothing changed; add --execute)"
    table = Table(title=f"{group}: {plan.target.describe()} — {what}")
    for col in ("topic", "partition", "current", "new", "read again", "skipped", "to read", "note"):
        table.add_column(col, justify="right" if col not in ("topic", "note") else "left")
    for r in plan.rows:
        table.add_row(r.topic, str(r.partition), "-" if r.current is None else str(r.current), str(r.new),
                      str(r.reread), str(r.skipped), str(r.to_read), r.note)
    out = common.console()
    out.print(table)
    out.print(f"{len(plan.rows)} partition(s): {plan.reread} record(s) read again, {plan.skipped} skipped"
              + ("" if plan.changes else "; no offset changes"))


def reset_offsets(
    group: str = typer.Argument(..., help="the consumer group, "
                                          "e.g. trainee-notify-mailer or trainee-notify-aggregator"),
    to_datetime: str | None = typer.Option(None, "--to-datetime", help="first offset at or after this time: "
                                           "ISO-8601 (naive = UTC), e.g. 2026-11-24T07:00:00Z, or a duration ago: 2h"),
    to_offset: int | None = typer.Option(None, "--to-offset", help="this offset on every selected partition (clamped)"),
    shift_by: int | None = typer.Option(None, "--shift-by", help="move by N (negative: back), clamped"),
    to_earliest: bool = typer.Option(False, "--to-earliest", help="the first offset still on the broker"),
    to_latest: bool = typer.Option(False, "--to-latest", help="the end: skip everything not yet read"),
    topic: list[str] = TOPIC_OPTION,
    partition: list[str] = PARTITION_OPTION,
    execute: bool = typer.Option(False, "--execute", help="write the new offsets (default: a dry run)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the plan only (the default)"),
    bootstrap: str | None = common.BOOTSTRAP_OPTION,
    as_json: bool = common.JSON_OPTION,
) -> None:
    """Move GROUP's committed offsets: a dry run that prints the plan until --execute.

    Refused while the group has live members. Examples:

        trainee-notify reset-offsets trainee-notify-mailer --to-datetime 2026-11-24T07:00:00Z
        trainee-notify reset-offsets trainee-notify-mailer --shift-by -10 --topic trainee-notify.netchange.v1:3 --execute
    """  # noqa: E501  an example command, kept whole so it can be copied
    with common.cli_errors():
        if execute and dry_run:
            raise common.UsageError("--execute and --dry-run contradict each other")
        target = target_of(to_datetime, to_offset, shift_by, to_earliest, to_latest)
        settings = common.kafka_settings(bootstrap)
        admin = common.admin(settings)
        members, states = gather(admin, group, target, topic, partition)
        try:
            plan = make_plan(states, target)
        except PlanError as exc:
            raise common.OpsError(str(exc)) from None
        if members and execute:
            if as_json:
                common.print_json({**plan_json(group, plan, members, execute, False),
                                   "refused": live_message(group, members)})
            raise common.OpsError(live_message(group, members), EXIT_REFUSED)
        if execute:
            execute_plan(admin, group, plan)
            audit("opsctl.offsets_reset", group=group, target=plan.target.describe(),
                            operator=common.operator_name(), partitions=len(plan.rows), reread=plan.reread,
                            skipped=plan.skipped)
        if as_json:
            common.print_json(plan_json(group, plan, members, execute, execute))
        else:
            print_plan(group, plan, execute)
        if members:
            typer.echo(f"warning: {live_message(group, members)}; --execute would be refused", err=True)
