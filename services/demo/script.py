"""A scripted "day of edits" against a loaded population, with what each trainee should be told.

``plan_day`` is pure: given the current rows (``load.read_population``) it picks about twenty trainees
and returns named steps of parametrised SQL, each with its expected outcome per trainee, following the
net-change semantics of ``shared/design.md``. ``play`` runs the steps, one commit per statement, so
that an edit undone is two commits, as a person would make it.
"""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Literal

import psycopg

from services.demo import refdata as ref
from services.demo.generator import (
    PersonalDetails,
    Placement,
    Population,
    ProgrammeMembership,
    email_local_part,
)

Kind = Literal["created", "updated", "deleted"]
Statement = tuple[str, tuple[Any, ...]]
_NAMESPACE = uuid.UUID("6f0d3c1e-1b1a-4a55-9d8e-3f4c1b2a7e10")
NOT_IN_POST = "placement type not in post"
ENDED = "placement ended before the day"
PLACEHOLDER = "placeholder person"


@dataclass(frozen=True)
class Expected:
    """One change a trainee's net change for the day should hold; ``suppressed`` says why it is not mailed."""

    entity: str
    kind: Kind
    suppressed: str | None = None


@dataclass(frozen=True)
class Step:
    name: str
    description: str
    statements: tuple[Statement, ...]
    expected: Mapping[str, tuple[Expected, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class DayScript:
    steps: tuple[Step, ...]
    #: trainee id -> the address their digest goes to at the end of the day
    addresses: Mapping[str, str]
    #: trainee id -> the old address that is told about an email change
    old_addresses: Mapping[str, str]
    #: trainee id -> Form R reminders that should arrive during the day
    reminders: Mapping[str, int] = field(default_factory=dict)
    #: trainee ids whose Form R submission takes them out of "at risk" in the report
    leaves_at_risk: tuple[str, ...] = ()

    def trainees(self) -> list[str]:
        """Every trainee a step touches, in step order."""
        seen: dict[str, None] = {}
        for step in self.steps:
            for tid in step.expected:
                seen.setdefault(tid, None)
        return list(seen)

    def expected(self) -> dict[str, tuple[Expected, ...]]:
        out: dict[str, tuple[Expected, ...]] = {}
        for step in self.steps:
            for tid, changes in step.expected.items():
                out[tid] = out.get(tid, ()) + changes
        return out

    def expected_emails(self) -> dict[str, int]:
        """Emails each trainee should receive: a digest when any change is mailable, plus a notice to
        the old address when the email changed."""
        counts: dict[str, int] = {}
        for tid, changes in self.expected().items():
            digest = any(c.suppressed is None for c in changes)
            counts[tid] = int(digest) + int(digest and tid in self.old_addresses)
        return counts

    def trainee_of_address(self) -> dict[str, str]:
        """Recipient address (lower case) -> trainee id, for matching received emails."""
        out = {a.lower(): t for t, a in self.addresses.items()}
        out.update({a.lower(): t for t, a in self.old_addresses.items()})
        return out


# ---------------------------------------------------------------------------------------------- picking

class _Picker:
    def __init__(self, pop: Population, day: date, rng: random.Random) -> None:
        self.day = day
        self.rng = rng
        self.people = {p.trainee_id: p for p in pop.personal_details}
        self.placements: dict[str, list[Placement]] = {}
        for p in pop.placement:
            self.placements.setdefault(p.trainee_id, []).append(p)
        self.programmes: dict[str, list[ProgrammeMembership]] = {}
        for pm in pop.programme_membership:
            self.programmes.setdefault(pm.trainee_id, []).append(pm)
        self.used: set[str] = set()
        self.emails = {p.email for p in pop.personal_details}
        self.next_placement_id = max((int(p.id) for p in pop.placement if p.id.isdigit()), default=900_000) + 1
        self.next_curriculum_id = max((int(c.id) for c in pop.curriculum_membership if c.id.isdigit()),
                                      default=9_000_000) + 1
        self.order = sorted(self.people)
        rng.shuffle(self.order)

    def in_post(self, p: Placement) -> bool:
        return p.placement_type.lower().startswith("in post") and p.end_date > self.day + timedelta(days=1)

    def trainee(self, *, role: str = "DR in Training",
                placement: Callable[[Placement], bool] | None = None) -> tuple[PersonalDetails, Placement | None]:
        """An unused trainee of ``role`` with a placement matching ``placement`` (when given)."""
        for tid in self.order:
            person = self.people[tid]
            if tid in self.used or person.role != role:
                continue
            found = next((p for p in self.placements.get(tid, []) if placement(p)), None) if placement else None
            if placement and found is None:
                continue
            self.used.add(tid)
            return person, found
        raise LookupError(f"no unused trainee with role {role!r} and such a placement")

    def placement_id(self) -> str:
        self.next_placement_id += 1
        return str(self.next_placement_id - 1)

    def curriculum_id(self) -> str:
        self.next_curriculum_id += 1
        return str(self.next_curriculum_id - 1)

    def new_email(self, person: PersonalDetails) -> str:
        local = email_local_part(person.forenames, person.surname)
        n = 1
        while f"{local}{n}@example.nhs.uk" in self.emails:
            n += 1
        email = f"{local}{n}@example.nhs.uk"
        self.emails.add(email)
        return email


def _office(p: Placement) -> ref.LocalOffice:
    return next((o for o in ref.LOCAL_OFFICES if o.name == p.owner), ref.LOCAL_OFFICES[0])


def _other_site(rng: random.Random, p: Placement) -> tuple[ref.Trust, ref.Site]:
    options = [(t, s) for t in _office(p).trusts for s in t.sites if s.name != p.site]
    return rng.choice(options)


def _bump_grade(grade: str) -> str:
    m = re.fullmatch(r"(\D+)(\d+)", grade)
    return f"{m.group(1)}{int(m.group(2)) + 1}" if m else "ST3"


def _other_wte(wte: str) -> str:
    return "0.80" if wte != "0.80" else "1.00"


_SET_SITE = ("UPDATE tss.placement SET site = %s, site_known_as = %s, site_location = %s, training_body = %s, "
             "updated_at = now() WHERE id = %s")


_INSERT_PM = ("INSERT INTO tss.programme_membership (id, trainee_id, programme_name, programme_number, "
              "managing_deanery, designated_body, programme_membership_type, start_date, end_date) "
              "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)")
_INSERT_CM = ("INSERT INTO tss.curriculum_membership (id, trainee_id, programme_membership_id, curriculum_name, "
              "curriculum_sub_type, specialty, start_date, end_date) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)")
_SET_ADDRESS = "UPDATE tss.personal_details SET address1 = %s, post_code = %s, updated_at = now() WHERE trainee_id = %s"


def _site_change(rng: random.Random, p: Placement) -> Statement:
    trust, site = _other_site(rng, p)
    return _SET_SITE, (site.name, site.known_as, site.location, trust.name, p.id)


def _site_restore(p: Placement) -> Statement:
    return _SET_SITE, (p.site, p.site_known_as, p.site_location, p.training_body, p.id)


def _insert_placement(p: Placement) -> Statement:
    cols = [c for c in Placement._fields if c != "updated_at"]
    return (f"INSERT INTO tss.placement ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})",  # noqa: S608  column names from Placement._fields, values as parameters
            tuple(getattr(p, c) for c in cols))


def _delete_placement(p: Placement) -> Statement:
    return "DELETE FROM tss.placement WHERE id = %s", (p.id,)


# ---------------------------------------------------------------------------------------------- the steps

def _steps(pk: _Picker, seed: int, run_label: str) -> Iterator[tuple[Step, dict[str, str]]]:
    """Yields each step and any email change it makes (trainee -> new address)."""
    rng, day = pk.rng, pk.day
    upd = (Expected("placement", "updated"),)

    a, pa = pk.trainee(placement=pk.in_post)
    assert pa
    yield Step("site change", "A trainee's current placement moves to another hospital.",
               (_site_change(rng, pa),), {a.trainee_id: upd}), {}

    b, pb = pk.trainee(placement=pk.in_post)
    assert pb
    yield Step("grade and WTE change", "Grade goes up one and whole time equivalent changes.",
               (("UPDATE tss.placement SET grade = %s, whole_time_equivalent = %s, updated_at = now() WHERE id = %s",
                 (_bump_grade(pb.grade), _other_wte(pb.whole_time_equivalent), pb.id)),), {b.trainee_id: upd}), {}

    c, pc = pk.trainee(placement=pk.in_post)
    assert pc
    yield Step("edit undone", "A site is changed, then changed back (A -> B -> A): nothing to tell.",
               (_site_change(rng, pc), _site_restore(pc)), {c.trainee_id: ()}), {}

    d, pd_ = pk.trainee(placement=pk.in_post)
    assert pd_
    temp = pd_._replace(id=pk.placement_id(), start_date=pd_.end_date + timedelta(days=1),
                        end_date=pd_.end_date + timedelta(days=180))
    yield Step("created then deleted", "A placement is added by mistake and removed: nothing to tell.",
               (_insert_placement(temp), _delete_placement(temp)), {d.trainee_id: ()}), {}

    e, _ = pk.trainee(placement=pk.in_post)
    new_email = pk.new_email(e)
    yield Step("email change", "The trainee's email address changes: digest to the new, notice to the old.",
               (("UPDATE tss.personal_details SET email = %s, updated_at = now() WHERE trainee_id = %s",
                 (new_email, e.trainee_id)),),
               {e.trainee_id: (Expected("personal_details", "updated"),)}), {e.trainee_id: new_email}

    f, pf = pk.trainee(placement=pk.in_post)
    g, _ = pk.trainee(placement=pk.in_post)
    assert pf
    yield Step("placement moved", "A placement recorded against the wrong trainee is moved to the right one.",
               (("UPDATE tss.placement SET trainee_id = %s, updated_at = now() WHERE id = %s", (g.trainee_id, pf.id)),),
               {f.trainee_id: (Expected("placement", "deleted"),),
                g.trainee_id: (Expected("placement", "created"),)}), {}

    h, ph = pk.trainee(placement=pk.in_post)
    assert ph
    yield _new_programme(pk, h, ph, seed, run_label), {}

    i, pi = pk.trainee(placement=pk.in_post)
    assert pi
    yield Step("placement removed", "A placement is deleted.", (_delete_placement(pi),),
               {i.trainee_id: (Expected("placement", "deleted"),)}), {}

    try:
        j, pj = pk.trainee(role="Placeholder", placement=pk.in_post)
        assert pj
        yield Step("placeholder person", "An edit to a Placeholder person's placement: recorded, never mailed.",
                   (_site_change(rng, pj),), {j.trainee_id: (Expected("placement", "updated", PLACEHOLDER),)}), {}
    except LookupError:
        pass

    k, pk_ = pk.trainee(placement=lambda p: not p.placement_type.lower().startswith("in post")
                        and p.end_date > day + timedelta(days=1))
    assert pk_
    yield Step("not in post", f"An edit to a '{pk_.placement_type}' placement: recorded, never mailed.",
               (("UPDATE tss.placement SET whole_time_equivalent = %s, updated_at = now() WHERE id = %s",
                 (_other_wte(pk_.whole_time_equivalent), pk_.id)),),
               {k.trainee_id: (Expected("placement", "updated", NOT_IN_POST),)}), {}

    yield from _more_steps(pk, upd)


def _new_programme(pk: _Picker, h: PersonalDetails, ph: Placement, seed: int, run_label: str) -> Step:
    pm_id = uuid.uuid5(_NAMESPACE, f"{seed}:{run_label}:programme:{h.trainee_id}")
    start = ph.end_date + timedelta(days=1)
    end = start + timedelta(days=3 * 365)
    office = _office(ph)
    return Step(
        "new programme membership", "The trainee joins a new programme, with its curriculum.",
        ((_INSERT_PM,
          (pm_id, h.trainee_id, "General Practice", f"{office.code}2210", office.name, office.designated_body,
           "SUBSTANTIVE", start, end)),
         (_INSERT_CM,
          (pk.curriculum_id(), h.trainee_id, pm_id, "General Practice", "MEDICAL_CURRICULUM", "General Practice",
           start, end))),
        {h.trainee_id: (Expected("curriculum_membership", "created"), Expected("programme_membership", "created"))})


def _more_steps(pk: _Picker, upd: tuple[Expected, ...]) -> Iterator[tuple[Step, dict[str, str]]]:
    rng, day = pk.rng, pk.day
    l_, pl = pk.trainee(placement=lambda p: p.end_date < day - timedelta(days=1))
    assert pl
    yield Step("ended placement", "A correction to a placement that ended before the day: recorded, never mailed.",
               (("UPDATE tss.placement SET grade = %s, updated_at = now() WHERE id = %s",
                 (_bump_grade(pl.grade), pl.id)),),
               {l_.trainee_id: (Expected("placement", "updated", ENDED),)}), {}

    m, _ = pk.trainee(placement=pk.in_post)
    yield Step("address change", "The trainee moves house.",
               ((_SET_ADDRESS, (f"{rng.randint(1, 99)} Beech Avenue", _shift_postcode(m.post_code),
                                           m.trainee_id)),),
               {m.trainee_id: (Expected("personal_details", "updated"),)}), {}

    n, pn = pk.trainee(placement=pk.in_post)
    assert pn
    pm = pk.programmes.get(n.trainee_id, [])
    stmts: list[Statement] = [_site_change(rng, pn),
                              ("UPDATE tss.personal_details SET mobile_number = %s, updated_at = now()"
                               " WHERE trainee_id = %s",
                               (f"{ref.MOBILE_PREFIX}{rng.randrange(1000):03d}" if n.mobile_number is None
                                else _other_mobile(n.mobile_number), n.trainee_id))]
    expected = [Expected("personal_details", "updated"), Expected("placement", "updated")]
    if pm:
        stmts.append(("UPDATE tss.programme_membership SET end_date = %s, updated_at = now() WHERE id = %s",
                      (pm[0].end_date + timedelta(days=182), pm[0].id)))
        expected.append(Expected("programme_membership", "updated"))
    yield Step("several edits, one digest", "Placement, phone and programme edits for one trainee: one email.",
               tuple(stmts), {n.trainee_id: tuple(expected)}), {}

    o, po = pk.trainee(placement=pk.in_post)
    assert po
    yield Step("deleted and re-inserted", "A placement is deleted and re-inserted exactly as it was: nothing to tell.",
               (_delete_placement(po), _insert_placement(po)), {o.trainee_id: ()}), {}

    p, pp = pk.trainee(placement=pk.in_post)
    assert pp
    yield Step("placement extended", "A placement's end date moves four weeks later.",
               (("UPDATE tss.placement SET end_date = %s, updated_at = now() WHERE id = %s",
                 (pp.end_date + timedelta(days=28), pp.id)),), {p.trainee_id: upd}), {}

    q, _ = pk.trainee(placement=pk.in_post)
    yield Step("surname change", "The trainee's surname changes.",
               (("UPDATE tss.personal_details SET surname = %s, updated_at = now() WHERE trainee_id = %s",
                 (f"{q.surname}-{rng.choice(ref.SURNAMES)}", q.trainee_id)),),
               {q.trainee_id: (Expected("personal_details", "updated"),)}), {}

    r, pr = pk.trainee(placement=pk.in_post)
    assert pr
    yield Step("WTE change only", "The trainee goes less than full time.",
               (("UPDATE tss.placement SET whole_time_equivalent = %s, updated_at = now() WHERE id = %s",
                 (_other_wte(pr.whole_time_equivalent), pr.id)),), {r.trainee_id: upd}), {}


def _shift_postcode(post_code: str) -> str:
    outward, _, inward = post_code.partition(" ")
    digit = (int(inward[0]) + 1) % 10 if inward[:1].isdigit() else 1
    return f"{outward} {digit}{inward[1:] or 'AB'}"


def _other_mobile(mobile: str) -> str:
    last = int(mobile[-3:]) if mobile[-3:].isdigit() else 0
    return f"{ref.MOBILE_PREFIX}{(last + 1) % 1000:03d}"


def plan_day(population: Population, *, day: date, seed: int = 0, run_label: str = "") -> DayScript:
    """The day's steps against ``population`` (the rows as they are now). Pure and deterministic:
    the same rows, day, seed and label give the same script. ``run_label`` makes new ids unique per run."""
    pk = _Picker(population, day, random.Random(seed))  # noqa: S311  seeded on purpose: the same seed makes the same script
    steps: list[Step] = []
    new_emails: dict[str, str] = {}
    for step, emails in _steps(pk, seed, run_label):
        steps.append(step)
        new_emails.update(emails)
    from services.demo.formr_script import formr_steps  # it builds on this module's picker and steps

    extra = formr_steps(pk, population, seed, run_label)
    steps += extra
    addresses = {tid: new_emails.get(tid, pk.people[tid].email) for s in steps for tid in s.expected}
    old = {tid: pk.people[tid].email for tid in new_emails}
    return DayScript(steps=tuple(steps), addresses=addresses, old_addresses=old,
                     reminders={t: 1 for s in extra if s.name == "ARCP booked" for t in s.expected},
                     leaves_at_risk=tuple(t for s in extra if s.name == "Form R submitted" for t in s.expected))


def play(conn: psycopg.Connection[Any], script: DayScript | Sequence[Step],
         on_step: Callable[[Step], None] | None = None) -> int:
    """Run every statement, each in its own transaction; returns the number of statements run."""
    steps = script.steps if isinstance(script, DayScript) else script
    count = 0
    for step in steps:
        for query, params in step.statements:
            with conn.transaction():
                conn.execute(query, params)
            count += 1
        if on_step:
            on_step(step)
    return count
