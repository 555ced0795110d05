-- The trainee self-service source schema (shared/data-model.md), as captured by Debezium.
-- REPLICA IDENTITY FULL on every table: updates and deletes then carry a full `before` image.
-- Idempotent: safe to apply to a database that already has it.

CREATE SCHEMA IF NOT EXISTS tss;

CREATE TABLE IF NOT EXISTS tss.personal_details (
    trainee_id        text PRIMARY KEY,
    role              text,
    title             text,
    forenames         text,
    surname           text,
    known_as          text,
    email             text,
    telephone_number  text,
    mobile_number     text,
    address1          text,
    address2          text,
    address3          text,
    address4          text,
    post_code         text,
    gmc_number        text,
    updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS tss.programme_membership (
    id                         uuid PRIMARY KEY,
    trainee_id                 text NOT NULL,
    programme_name             text,
    programme_number           text,
    managing_deanery           text,
    designated_body            text,
    programme_membership_type  text,
    start_date                 date,
    end_date                   date,
    updated_at                 timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS programme_membership_trainee_idx ON tss.programme_membership (trainee_id);

CREATE TABLE IF NOT EXISTS tss.curriculum_membership (
    id                       text PRIMARY KEY,
    trainee_id               text NOT NULL,
    programme_membership_id  uuid,
    curriculum_name          text,
    curriculum_sub_type      text,
    specialty                text,
    start_date               date,
    end_date                 date,
    updated_at               timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS curriculum_membership_trainee_idx ON tss.curriculum_membership (trainee_id);

CREATE TABLE IF NOT EXISTS tss.placement (
    id                     text PRIMARY KEY,
    trainee_id             text NOT NULL,
    placement_type         text,
    start_date             date,
    end_date               date,
    grade                  text,
    specialty              text,
    sub_specialty          text,
    site                   text,
    site_known_as          text,
    site_location          text,
    employing_body         text,
    training_body          text,
    whole_time_equivalent  numeric(3,2),
    owner                  text,
    updated_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS placement_trainee_idx ON tss.placement (trainee_id);

CREATE TABLE IF NOT EXISTS tss.form_r (
    id                       uuid PRIMARY KEY,
    trainee_id               text NOT NULL,
    part                     text CHECK (part IN ('A', 'B')),
    programme_membership_id  uuid,
    is_arcp                  boolean,
    lifecycle_state          text CHECK (lifecycle_state IN ('DRAFT', 'SUBMITTED', 'UNSUBMITTED', 'DELETED')),
    submitted_at             timestamptz,
    revision                 integer NOT NULL DEFAULT 0,
    updated_at               timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS form_r_trainee_idx ON tss.form_r (trainee_id);

CREATE TABLE IF NOT EXISTS tss.arcp (
    id                       text PRIMARY KEY,
    trainee_id               text NOT NULL,
    programme_membership_id  uuid,
    review_date              date,
    outcome                  text,
    updated_at               timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS arcp_trainee_idx ON tss.arcp (trainee_id);

ALTER TABLE tss.personal_details      REPLICA IDENTITY FULL;
ALTER TABLE tss.programme_membership  REPLICA IDENTITY FULL;
ALTER TABLE tss.curriculum_membership REPLICA IDENTITY FULL;
ALTER TABLE tss.placement             REPLICA IDENTITY FULL;
ALTER TABLE tss.form_r                REPLICA IDENTITY FULL;
ALTER TABLE tss.arcp                  REPLICA IDENTITY FULL;

-- The publication the connector reads (publication.name in deploy/connect/tss-postgres.json).
-- Created here so that its table list is explicit; Debezium's `filtered` autocreate would make the
-- same one if it were missing.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'tss_publication') THEN
        CREATE PUBLICATION tss_publication FOR TABLE
            tss.personal_details, tss.programme_membership, tss.curriculum_membership,
            tss.placement, tss.form_r, tss.arcp;
    END IF;
END
$$;
