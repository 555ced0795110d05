"""The scripted day's Form R steps (pure, as the rest of the script): a trainee at risk submits what
was missing, and an ARCP is booked two weeks ahead for a trainee with a part missing."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

from services.demo.generator import Population
from services.demo.script import _NAMESPACE, Statement, Step, _Picker
from services.formr import rules

_SUBMIT = "UPDATE tss.form_r SET lifecycle_state = 'SUBMITTED', submitted_at = now(), updated_at = now() WHERE id = %s"
_INSERT_FORM = ("INSERT INTO tss.form_r (id, trainee_id, part, programme_membership_id, is_arcp, lifecycle_state, "
                "submitted_at, revision) VALUES (%s, %s, %s, %s, true, 'SUBMITTED', now(), 1)")
_INSERT_ARCP = "INSERT INTO tss.arcp (id, trainee_id, programme_membership_id, review_date) VALUES (%s, %s, %s, %s)"


def _report_rows(pop: Population, day: date) -> list[rules.Row]:
    """The Form R report as it stands for the population (the service's own pure rules)."""
    arcps = [rules.Arcp(a.id, a.trainee_id, str(a.programme_membership_id), a.review_date, a.outcome)
             for a in pop.arcp]
    forms = [rules.FormR(str(f.id), f.trainee_id, f.part, str(f.programme_membership_id), f.lifecycle_state,
                         f.submitted_at) for f in pop.form_r]
    progs = {str(m.id): rules.Programme(str(m.id), m.trainee_id, m.programme_name, m.programme_number,
                                        m.managing_deanery) for m in pop.programme_membership}
    people = {p.trainee_id: rules.Person(p.trainee_id, p.role, p.title, p.forenames, p.surname, p.email)
              for p in pop.personal_details}
    return rules.build_rows(arcps, forms, progs, people, day)


def formr_steps(pk: _Picker, pop: Population, seed: int, run_label: str) -> list[Step]:
    """Two steps for the Form R report and its reminders: a trainee at risk submits both parts (they
    leave "at risk"), and an ARCP is booked two weeks ahead for a trainee with a part missing (their
    two-week reminder is due today). Neither table is in the daily digest: both expect no net change."""
    day = pk.day
    rows = _report_rows(pop, day)
    steps: list[Step] = []
    risky = [r for r in rows if r.at_risk and 7 <= r.days_to_review <= 40 and r.trainee_id not in pk.used
             and pk.people.get(r.trainee_id) is not None and pk.people[r.trainee_id].role == "DR in Training"
             and pk.people[r.trainee_id].email]
    if risky:
        x = risky[0]
        pk.used.add(x.trainee_id)
        stmts: list[Statement] = []
        for part, status in (("A", x.part_a), ("B", x.part_b)):
            if status.done:
                continue
            mine = [f for f in pop.form_r if f.trainee_id == x.trainee_id and f.part == part
                    and str(f.programme_membership_id) == x.programme_membership_id]
            if mine:
                stmts.append((_SUBMIT, (mine[-1].id,)))
            else:
                stmts.append((_INSERT_FORM, (uuid.uuid5(_NAMESPACE, f"{seed}:{run_label}:form:{x.trainee_id}:{part}"),
                                             x.trainee_id, part, x.programme_membership_id)))
        steps.append(Step("Form R submitted", f"A trainee at risk ({x.days_to_review} days to the ARCP) submits "
                          "what was missing: they leave \"at risk\" in the report.", tuple(stmts), {x.trainee_id: ()}))
    with_arcp = {r.trainee_id for r in rows}
    for tid in pk.order:
        person = pk.people[tid]
        pms = pk.programmes.get(tid, [])
        if tid in pk.used or tid in with_arcp or person.role != "DR in Training" or not person.email or not pms:
            continue
        pm = pms[0]
        submitted = {f.part for f in pop.form_r if f.trainee_id == tid and f.lifecycle_state == "SUBMITTED"
                     and f.programme_membership_id == pm.id}
        if submitted == {"A", "B"} or not pm.managing_deanery:
            continue
        pk.used.add(tid)
        arcp_id = str(uuid.uuid5(_NAMESPACE, f"{seed}:{run_label}:arcp:{tid}"))
        steps.append(Step("ARCP booked", "An ARCP is booked two weeks ahead for a trainee with a Form R part "
                          "missing: the two-week reminder is due today and arrives in the inbox.",
                          ((_INSERT_ARCP, (arcp_id, tid, pm.id, day + timedelta(days=14))),), {tid: ()}))
        break
    return steps
