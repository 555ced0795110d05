"""The reminders' shell: on each clock tick, the due reminders through the mailer's ledger and SMTP path.

Per reminder: claim its notification id in ``notify.ledger`` (kind ``formr-reminder``) — a final
outcome there means it went already, so a restart or a second instance sends nothing twice — mark
it SENDING, hand it to SMTP, record the outcome (a reminder sent after its milestone day is marked
late in the ledger's reason). A kill -9 during DATA leaves SENDING, which the next claim records as
UNCERTAIN and does not resend, as the mailer does; so does the pass that finds its milestone passed
(a later one due) and records it not sent. 4xx and connection errors are released and
tried on the next tick; 5xx fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Callable
from typing import Any

from psycopg_pool import ConnectionPool

from services import logs
from services.formr import reminders
from services.formr.rules import Rules, local_date
from services.formr.store import load_rows, persons
from services.notifier.compose import ComposedEmail
from services.notifier.contacts import Contacts
from services.notifier.ledger import Decision, Ledger
from services.notifier.mime import to_bytes
from services.notifier.plan import FINAL, Notification, Status, message_id
from services.notifier.safety import Refused, validate_address
from services.notifier.smtp import Outcome, SmtpPool
from services.settings import FormrSettings

log = logs.get("formr.reminders")


class _Kind(str):
    """The ledger stores ``kind.value``; this kind is the Form R service's own, not the mailer's."""

    @property
    def value(self) -> str:
        return str(self)


KIND = _Kind(reminders.KIND)


def _notification(d: reminders.Due, weeks: int, due_on: dt.date) -> Notification:
    nid = reminders.notification_id(d.row.trainee_id, d.row.arcp_id, weeks)
    return Notification(nid, KIND, d.row.arcp_id, d.row.trainee_id, due_on.isoformat())  # type: ignore[arg-type]


def _final_ids(pool: ConnectionPool[Any], ids: list[str]) -> set[str]:
    if not ids:
        return set()
    with pool.connection() as conn:
        rows = conn.execute("SELECT notification_id FROM notify.ledger WHERE notification_id = ANY(%s) "
                            "AND status = ANY(%s)", (ids, [s.value for s in FINAL])).fetchall()
    return {r[0] for r in rows}


def _plan(pool: ConnectionPool[Any], rules: Rules, today: dt.date, weeks: list[int]) -> list[reminders.Due]:
    with pool.connection() as conn:
        rows = load_rows(conn, None, today, rules)
        people = persons(conn, [r.trainee_id for r in rows if not r.both_submitted])
    return reminders.due_reminders(rows, people, today, weeks)


async def tick(settings: FormrSettings, pool: ConnectionPool[Any], ledger: Ledger, smtp: SmtpPool,
               contacts: Contacts, rules: Rules, now: Callable[[], dt.datetime]) -> int:
    today = local_date(now(), rules.zone)
    dues = await asyncio.to_thread(_plan, pool, rules, today, list(settings.formr_reminder_weeks))
    done = await asyncio.to_thread(_final_ids, pool, [d.notification_id for d in dues])
    sent = 0
    for d in dues:
        for weeks, due_on in d.skipped:
            skip = _notification(d, weeks, due_on)
            if skip.notification_id not in done:
                settled = await ledger.record_final(skip, Status.SUPPRESSED, "a later reminder was due: not sent")
                if settled.decision == "uncertain":  # its send died during DATA and its milestone has passed since
                    log.warning("formr.reminder.uncertain", notification_id=skip.notification_id,
                                trainee_id=d.row.trainee_id, weeks=weeks)
        if d.notification_id in done:
            continue
        sent += await _send(settings, ledger, smtp, contacts, d, now)
    log.info("formr.reminders.pass", day=today.isoformat(), due=len(dues), already_final=len(done), sent=sent)
    return sent


async def _send(settings: FormrSettings, ledger: Ledger, smtp: SmtpPool, contacts: Contacts,
                d: reminders.Due, now: Callable[[], dt.datetime]) -> int:
    n = _notification(d, d.weeks, d.due_on)
    bound = log.bind(notification_id=n.notification_id, trainee_id=d.row.trainee_id, late=d.late)
    try:
        to = validate_address(d.person.email or "", allow_test_domains=settings.allow_test_domains)
    except Refused:
        done = await ledger.record_final(n, Status.NO_ADDRESS, "the address is not valid")
        if done.decision == "uncertain":  # an earlier send of it died during DATA (the address changed since)
            bound.warning("formr.reminder.uncertain", weeks=d.weeks)
        else:
            bound.info("formr.reminder.no_address")
        return 0
    claim = await ledger.claim(n)  # no content hash: a reminder is never SUPERSEDED
    if claim.decision is not Decision.SEND:
        bound.info("formr.reminder.skipped", decision=claim.decision.value)
        return 0
    contact = contacts.for_deanery(d.row.local_office)
    text = reminders.compose(d, submit_url=settings.formr_submit_url, contact_name=contact.name,
                             contact_email=contact.email, contact_url=contact.url)
    mid = message_id(n.notification_id, claim.generation, settings.message_id_domain)
    headers = {"From": settings.mail_from, "To": to, "Subject": text.subject, "Message-ID": mid,
               "Auto-Submitted": "auto-generated", "X-Auto-Response-Suppress": "All"}
    raw = to_bytes(ComposedEmail(to, text.subject, text.text, text.html, mid, headers), date=now())
    if not await ledger.mark_sending(n.notification_id, mid):
        return 0
    sender = _bare(settings.mail_from)
    attempt = await smtp.send(raw, sender, to)
    late = f"sent late: the {d.weeks}-week milestone was {d.due_on.isoformat()}" if d.late else None
    if attempt.outcome is Outcome.SENT:
        await ledger.mark(n.notification_id, Status.SENT, message_id=mid, smtp_code=attempt.code, reason=late)
        bound.info("formr.reminder.sent", weeks=d.weeks)
        return 1
    if attempt.outcome is Outcome.RETRY:
        await ledger.mark(n.notification_id, Status.RETRYING, smtp_code=attempt.code, reason=attempt.reason)
        await ledger.release(n.notification_id)
    elif attempt.outcome is Outcome.UNCERTAIN:
        await ledger.mark(n.notification_id, Status.UNCERTAIN, smtp_code=attempt.code, reason=attempt.reason)
    else:
        await ledger.mark(n.notification_id, Status.FAILED, smtp_code=attempt.code, reason=attempt.reason)
    bound.warning("formr.reminder.not_sent", outcome=attempt.outcome.value, code=attempt.code)
    return 0


def _bare(addr: str) -> str:
    import email.utils

    return email.utils.parseaddr(addr)[1]


async def reminder_loop(settings: FormrSettings, pool: ConnectionPool[Any], rules: Rules,
                        now: Callable[[], dt.datetime], stop: asyncio.Event,
                        ready: Callable[[], bool] = lambda: True) -> None:
    """Tick until ``stop``; a tick runs only while ``ready()`` (the read model has caught up)."""
    ledger = Ledger(settings.formr_dsn, owner=settings.formr_instance_id)
    await ledger.open()
    smtp = SmtpPool(settings)
    contacts = Contacts.from_json(settings.contacts_file) if settings.contacts_file else Contacts.default()
    try:
        while not stop.is_set():
            try:
                if ready():
                    await tick(settings, pool, ledger, smtp, contacts, rules, now)
            except Exception:  # a failed tick (database down) is retried on the next one
                log.exception("formr.reminders.tick_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), settings.formr_reminder_every_seconds)
    finally:
        await smtp.close()
        await ledger.close()
