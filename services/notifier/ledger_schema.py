"""The ledger's tables and functions in PostgreSQL (``notify.ledger``, its claims and outcome records),
applied by :meth:`services.notifier.ledger.Ledger.open` under an advisory lock, idempotently: every
statement is ``IF NOT EXISTS`` or ``CREATE OR REPLACE`` (or a DROP and CREATE in that transaction)."""

SCHEMA = """
CREATE SCHEMA IF NOT EXISTS notify;
CREATE TABLE IF NOT EXISTS notify.ledger (
    notification_id  text PRIMARY KEY,
    record_id        text NOT NULL,
    trainee_id       text NOT NULL,
    day              text NOT NULL,
    kind             text NOT NULL,
    status           text NOT NULL,
    generation       integer NOT NULL DEFAULT 0,
    message_id       text,
    owner            text,
    lease_until      timestamptz,
    attempts         integer NOT NULL DEFAULT 0,
    smtp_code        integer,
    reason           text,
    resend_requested boolean NOT NULL DEFAULT false,
    resend_by        text,
    resend_reason    text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz
);
ALTER TABLE notify.ledger ADD COLUMN IF NOT EXISTS first_sent_at timestamptz;
CREATE INDEX IF NOT EXISTS ledger_trainee ON notify.ledger (trainee_id, day);
CREATE INDEX IF NOT EXISTS ledger_status ON notify.ledger (status, updated_at);

-- One claim, atomically. Returns what the caller may do (send/done/busy/uncertain), the generation
-- to send with, the status found and when the notification was first sent (for a copy's banner).
CREATE OR REPLACE FUNCTION notify.claim(p_id text, p_record text, p_trainee text, p_day text, p_kind text,
                                        p_owner text, p_lease double precision)
RETURNS TABLE (o_decision text, o_generation integer, o_status text, o_first_sent_at timestamptz)
LANGUAGE plpgsql AS $fn$
DECLARE
    r notify.ledger%ROWTYPE;
    expired boolean;
BEGIN
    INSERT INTO notify.ledger AS l (notification_id, record_id, trainee_id, day, kind, status, owner, lease_until)
    VALUES (p_id, p_record, p_trainee, p_day, p_kind, 'PENDING', p_owner, now() + make_interval(secs => p_lease))
    ON CONFLICT (notification_id) DO NOTHING;
    IF FOUND THEN
        RETURN QUERY SELECT 'send'::text, 0, 'PENDING'::text, NULL::timestamptz;
        RETURN;
    END IF;
    SELECT * INTO r FROM notify.ledger l WHERE l.notification_id = p_id FOR UPDATE;
    expired := r.lease_until IS NULL OR r.lease_until < now();
    IF r.resend_requested
       AND (r.status IN ('SENT', 'FAILED', 'UNCERTAIN', 'SUPPRESSED', 'NO_ADDRESS', 'SUPERSEDED') OR expired) THEN
        UPDATE notify.ledger l SET status = 'PENDING', generation = r.generation + 1, owner = p_owner,
               lease_until = now() + make_interval(secs => p_lease), updated_at = now(), resend_requested = false
         WHERE l.notification_id = p_id;
        -- a resend of an UNCERTAIN one names when that attempt was given up as uncertain (a copy too)
        RETURN QUERY SELECT 'send'::text, r.generation + 1, r.status,
                            COALESCE(r.first_sent_at, r.sent_at,
                                     CASE WHEN r.status = 'UNCERTAIN' THEN r.updated_at END);
        RETURN;
    END IF;
    IF r.status IN ('SENT', 'FAILED', 'UNCERTAIN', 'SUPPRESSED', 'NO_ADDRESS', 'SUPERSEDED') THEN
        RETURN QUERY SELECT 'done'::text, r.generation, r.status, COALESCE(r.first_sent_at, r.sent_at);
        RETURN;
    END IF;
    IF NOT expired AND r.owner IS DISTINCT FROM p_owner THEN
        RETURN QUERY SELECT 'busy'::text, r.generation, r.status, COALESCE(r.first_sent_at, r.sent_at);
        RETURN;
    END IF;
    IF r.status = 'SENDING' THEN
        UPDATE notify.ledger l SET status = 'UNCERTAIN', updated_at = now(), owner = NULL, lease_until = NULL,
               reason = 'the sending instance stopped during DATA; delivery unknown'
         WHERE l.notification_id = p_id;
        RETURN QUERY SELECT 'uncertain'::text, r.generation, 'UNCERTAIN'::text, COALESCE(r.first_sent_at, r.sent_at);
        RETURN;
    END IF;
    UPDATE notify.ledger l SET status = 'PENDING', owner = p_owner, updated_at = now(),
           lease_until = now() + make_interval(secs => p_lease)
     WHERE l.notification_id = p_id;
    RETURN QUERY SELECT 'send'::text, r.generation, r.status, COALESCE(r.first_sent_at, r.sent_at);
END
$fn$;

-- Many claims in one transaction (ids distinct, sorted by the caller so that two instances lock rows
-- in the same order). New ids are inserted in one statement; the others are decided one by one by
-- notify.claim, which also covers an id another instance inserted in the meantime.
CREATE OR REPLACE FUNCTION notify.claim_many(p_ids text[], p_records text[], p_trainees text[], p_days text[],
                                             p_kinds text[], p_owner text, p_lease double precision)
RETURNS TABLE (o_id text, o_decision text, o_generation integer, o_status text, o_first_sent_at timestamptz)
LANGUAGE plpgsql AS $fn$
DECLARE
    inserted text[];
BEGIN
    WITH ins AS (
        INSERT INTO notify.ledger AS l (notification_id, record_id, trainee_id, day, kind, status, owner, lease_until)
        SELECT u.id, u.rec, u.trainee, u.day, u.kind, 'PENDING', p_owner, now() + make_interval(secs => p_lease)
          FROM unnest(p_ids, p_records, p_trainees, p_days, p_kinds) AS u(id, rec, trainee, day, kind)
        ON CONFLICT (notification_id) DO NOTHING
        RETURNING l.notification_id)
    SELECT COALESCE(array_agg(ins.notification_id), '{}') INTO inserted FROM ins;
    RETURN QUERY SELECT i, 'send'::text, 0, 'PENDING'::text, NULL::timestamptz FROM unnest(inserted) AS i;
    RETURN QUERY
        SELECT u.id, c.o_decision, c.o_generation, c.o_status, c.o_first_sent_at
          FROM unnest(p_ids, p_records, p_trainees, p_days, p_kinds) AS u(id, rec, trainee, day, kind)
         CROSS JOIN LATERAL notify.claim(u.id, u.rec, u.trainee, u.day, u.kind, p_owner, p_lease) AS c
         WHERE u.id <> ALL (inserted);
END
$fn$;

-- Replays made visible (docs/runbook.md, "Replay after a bug fix"): the content hash and the value of
-- the record a notification was sent from; a record with the same id and other content is not sent
-- but recorded SUPERSEDED, with its hash and value. Resends are asked for by an operator (trainee-notify
-- resend): the request id, and the content hash the copy is for.
ALTER TABLE notify.ledger ADD COLUMN IF NOT EXISTS content_hash text;
ALTER TABLE notify.ledger ADD COLUMN IF NOT EXISTS record_value bytea;
ALTER TABLE notify.ledger ADD COLUMN IF NOT EXISTS superseded_hash text;
ALTER TABLE notify.ledger ADD COLUMN IF NOT EXISTS superseded_value bytea;
ALTER TABLE notify.ledger ADD COLUMN IF NOT EXISTS superseded_status text;
ALTER TABLE notify.ledger ADD COLUMN IF NOT EXISTS superseded_at timestamptz;
ALTER TABLE notify.ledger ADD COLUMN IF NOT EXISTS resend_request_id text;
ALTER TABLE notify.ledger ADD COLUMN IF NOT EXISTS resend_hash text;
ALTER TABLE notify.ledger ADD COLUMN IF NOT EXISTS resend_requested_at timestamptz;
-- what operators asked for (resend, dead-letter retry): one row per request and item, so a request
-- replayed with the same id does nothing more
CREATE TABLE IF NOT EXISTS notify.ops_audit (
    request_id   text NOT NULL,
    item         text NOT NULL,
    action       text NOT NULL,
    operator     text NOT NULL,
    reason       text NOT NULL,
    detail       jsonb,
    requested_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (request_id, item)
);

-- The claim with content: as above, and a final notification whose record now has other content
-- is SUPERSEDED (decision 'superseded'), not sent. A resend asked for with a content hash is taken
-- only by a record with that content. Also returns the content hash the ledger held and the resend's
-- request id, operator and reason (for the status events of a copy).
CREATE OR REPLACE FUNCTION notify.claim(p_id text, p_record text, p_trainee text, p_day text, p_kind text,
                                        p_owner text, p_lease double precision, p_hash text, p_value bytea)
RETURNS TABLE (o_decision text, o_generation integer, o_status text, o_first_sent_at timestamptz,
               o_old_hash text, o_request_id text, o_operator text, o_reason text)
LANGUAGE plpgsql AS $fn$
DECLARE
    r notify.ledger%ROWTYPE;
    expired boolean;
    final boolean;
BEGIN
    INSERT INTO notify.ledger AS l (notification_id, record_id, trainee_id, day, kind, status, owner, lease_until,
                                    content_hash, record_value)
    VALUES (p_id, p_record, p_trainee, p_day, p_kind, 'PENDING', p_owner, now() + make_interval(secs => p_lease),
            p_hash, p_value)
    ON CONFLICT (notification_id) DO NOTHING;
    IF FOUND THEN
        RETURN QUERY SELECT 'send'::text, 0, 'PENDING'::text, NULL::timestamptz, NULL::text, NULL::text, NULL::text,
                            NULL::text;
        RETURN;
    END IF;
    SELECT * INTO r FROM notify.ledger l WHERE l.notification_id = p_id FOR UPDATE;
    expired := r.lease_until IS NULL OR r.lease_until < now();
    final := r.status IN ('SENT', 'FAILED', 'UNCERTAIN', 'SUPPRESSED', 'NO_ADDRESS', 'SUPERSEDED');
    IF r.resend_requested AND (final OR expired) AND (r.resend_hash IS NULL OR r.resend_hash = p_hash) THEN
        UPDATE notify.ledger l SET status = 'PENDING', generation = r.generation + 1, owner = p_owner,
               lease_until = now() + make_interval(secs => p_lease), updated_at = now(), resend_requested = false,
               content_hash = COALESCE(p_hash, r.content_hash), record_value = COALESCE(p_value, r.record_value),
               superseded_hash = CASE WHEN r.superseded_hash = p_hash THEN NULL ELSE r.superseded_hash END,
               superseded_value = CASE WHEN r.superseded_hash = p_hash THEN NULL ELSE r.superseded_value END,
               superseded_status = CASE WHEN r.superseded_hash = p_hash THEN NULL ELSE r.superseded_status END
         WHERE l.notification_id = p_id;
        RETURN QUERY SELECT 'send'::text, r.generation + 1, r.status,
                            COALESCE(r.first_sent_at, r.sent_at,
                                     CASE WHEN r.status = 'UNCERTAIN' THEN r.updated_at END),
                            r.content_hash, r.resend_request_id, r.resend_by, r.resend_reason;
        RETURN;
    END IF;
    IF final THEN
        IF p_hash IS NOT NULL AND r.content_hash IS NOT NULL AND p_hash <> r.content_hash
           AND p_hash IS DISTINCT FROM r.superseded_hash THEN
            UPDATE notify.ledger l SET status = 'SUPERSEDED', superseded_hash = p_hash, superseded_value = p_value,
                   superseded_status = CASE WHEN r.status = 'SUPERSEDED' THEN r.superseded_status ELSE r.status END,
                   superseded_at = now(), updated_at = now()
             WHERE l.notification_id = p_id;
            RETURN QUERY SELECT 'superseded'::text, r.generation, r.status, COALESCE(r.first_sent_at, r.sent_at),
                                r.content_hash, NULL::text, NULL::text, NULL::text;
            RETURN;
        END IF;
        RETURN QUERY SELECT 'done'::text, r.generation, r.status, COALESCE(r.first_sent_at, r.sent_at),
                            r.content_hash, NULL::text, NULL::text, NULL::text;
        RETURN;
    END IF;
    IF NOT expired AND r.owner IS DISTINCT FROM p_owner THEN
        RETURN QUERY SELECT 'busy'::text, r.generation, r.status, COALESCE(r.first_sent_at, r.sent_at),
                            r.content_hash, NULL::text, NULL::text, NULL::text;
        RETURN;
    END IF;
    IF r.status = 'SENDING' THEN
        UPDATE notify.ledger l SET status = 'UNCERTAIN', updated_at = now(), owner = NULL, lease_until = NULL,
               reason = 'the sending instance stopped during DATA; delivery unknown'
         WHERE l.notification_id = p_id;
        RETURN QUERY SELECT 'uncertain'::text, r.generation, 'UNCERTAIN'::text, COALESCE(r.first_sent_at, r.sent_at),
                            r.content_hash, NULL::text, NULL::text, NULL::text;
        RETURN;
    END IF;
    UPDATE notify.ledger l SET status = 'PENDING', owner = p_owner, updated_at = now(),
           lease_until = now() + make_interval(secs => p_lease),
           content_hash = COALESCE(p_hash, r.content_hash), record_value = COALESCE(p_value, r.record_value)
     WHERE l.notification_id = p_id;
    RETURN QUERY SELECT 'send'::text, r.generation, r.status, COALESCE(r.first_sent_at, r.sent_at),
                        r.content_hash, NULL::text, NULL::text, NULL::text;
END
$fn$;

CREATE OR REPLACE FUNCTION notify.claim_many(p_ids text[], p_records text[], p_trainees text[], p_days text[],
                                             p_kinds text[], p_owner text, p_lease double precision,
                                             p_hashes text[], p_values bytea[])
RETURNS TABLE (o_id text, o_decision text, o_generation integer, o_status text, o_first_sent_at timestamptz,
               o_old_hash text, o_request_id text, o_operator text, o_reason text)
LANGUAGE plpgsql AS $fn$
DECLARE
    inserted text[];
BEGIN
    WITH ins AS (
        INSERT INTO notify.ledger AS l (notification_id, record_id, trainee_id, day, kind, status, owner, lease_until,
                                        content_hash, record_value)
        SELECT u.id, u.rec, u.trainee, u.day, u.kind, 'PENDING', p_owner, now() + make_interval(secs => p_lease),
               u.hash, u.value
          FROM unnest(p_ids, p_records, p_trainees, p_days, p_kinds, p_hashes, p_values)
               AS u(id, rec, trainee, day, kind, hash, value)
        ON CONFLICT (notification_id) DO NOTHING
        RETURNING l.notification_id)
    SELECT COALESCE(array_agg(ins.notification_id), '{}') INTO inserted FROM ins;
    RETURN QUERY SELECT i, 'send'::text, 0, 'PENDING'::text, NULL::timestamptz, NULL::text, NULL::text, NULL::text,
                        NULL::text FROM unnest(inserted) AS i;
    RETURN QUERY
        SELECT u.id, c.o_decision, c.o_generation, c.o_status, c.o_first_sent_at, c.o_old_hash, c.o_request_id,
               c.o_operator, c.o_reason
          FROM unnest(p_ids, p_records, p_trainees, p_days, p_kinds, p_hashes, p_values)
               AS u(id, rec, trainee, day, kind, hash, value)
         CROSS JOIN LATERAL notify.claim(u.id, u.rec, u.trainee, u.day, u.kind, p_owner, p_lease, u.hash, u.value) AS c
         WHERE u.id <> ALL (inserted);
END
$fn$;

-- An outcome decided without sending (SUPPRESSED, NO_ADDRESS), idempotently: 'recorded' when this call
-- recorded it; 'done' when the ledger already held it; 'superseded' when it held a final outcome of
-- a record with other content (then recorded SUPERSEDED, as a claim would); 'uncertain' when it held
-- a row left SENDING by an instance that died during DATA (its lease ran out, or it is the caller's
-- own from before a restart), then recorded UNCERTAIN, as a claim would: it may have gone, so it is
-- neither suppressed nor left SENDING for ever (a reminder whose milestone passed while its sender
-- was down is never claimed again).
-- (re-created: its result gained o_generation; the nine-argument form below stays for instances of the
-- release before, during a rolling upgrade)
DROP FUNCTION IF EXISTS notify.record_final(text, text, text, text, text, text, text, text, bytea, text);
CREATE FUNCTION notify.record_final(p_id text, p_record text, p_trainee text, p_day text, p_kind text,
                                    p_status text, p_reason text, p_hash text, p_value bytea, p_owner text)
RETURNS TABLE (o_decision text, o_status text, o_old_hash text, o_generation integer)
LANGUAGE plpgsql AS $fn$
DECLARE
    r notify.ledger%ROWTYPE;
BEGIN
    INSERT INTO notify.ledger (notification_id, record_id, trainee_id, day, kind, status, reason, content_hash,
                               record_value)
    VALUES (p_id, p_record, p_trainee, p_day, p_kind, p_status, p_reason, p_hash, p_value)
    ON CONFLICT (notification_id) DO NOTHING;
    IF FOUND THEN
        RETURN QUERY SELECT 'recorded'::text, p_status, NULL::text, 0;
        RETURN;
    END IF;
    SELECT * INTO r FROM notify.ledger l WHERE l.notification_id = p_id FOR UPDATE;
    IF r.status IN ('SENT', 'FAILED', 'UNCERTAIN', 'SUPPRESSED', 'NO_ADDRESS', 'SUPERSEDED')
       AND p_hash IS NOT NULL AND r.content_hash IS NOT NULL AND p_hash <> r.content_hash
       AND p_hash IS DISTINCT FROM r.superseded_hash THEN
        UPDATE notify.ledger l SET status = 'SUPERSEDED', superseded_hash = p_hash, superseded_value = p_value,
               superseded_status = CASE WHEN r.status = 'SUPERSEDED' THEN r.superseded_status ELSE r.status END,
               superseded_at = now(), updated_at = now()
         WHERE l.notification_id = p_id;
        RETURN QUERY SELECT 'superseded'::text, r.status, r.content_hash, r.generation;
        RETURN;
    END IF;
    IF r.status = 'SENDING' AND (r.lease_until IS NULL OR r.lease_until < now() OR r.owner = p_owner) THEN
        UPDATE notify.ledger l SET status = 'UNCERTAIN', updated_at = now(), owner = NULL, lease_until = NULL,
               reason = 'the sending instance stopped during DATA; delivery unknown'
         WHERE l.notification_id = p_id;
        RETURN QUERY SELECT 'uncertain'::text, 'UNCERTAIN'::text, r.content_hash, r.generation;
        RETURN;
    END IF;
    RETURN QUERY SELECT 'done'::text, r.status, r.content_hash, r.generation;
END
$fn$;

-- The form the release before called (no owner: only a lapsed lease settles a dead sender's row).
CREATE OR REPLACE FUNCTION notify.record_final(p_id text, p_record text, p_trainee text, p_day text, p_kind text,
                                               p_status text, p_reason text, p_hash text, p_value bytea)
RETURNS TABLE (o_decision text, o_status text, o_old_hash text)
LANGUAGE sql AS $fn$
    SELECT f.o_decision, f.o_status, f.o_old_hash
      FROM notify.record_final(p_id, p_record, p_trainee, p_day, p_kind, p_status, p_reason, p_hash, p_value,
                               NULL::text) f
$fn$;
"""
