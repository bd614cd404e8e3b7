-- Identity and audit: refresh tokens (sign-in sessions) and the
-- append-only, hash-chained audit trail.

-- A refresh token is a random secret held in an HttpOnly cookie; only its
-- SHA-256 is stored. Tokens rotate on every use; the chain of rotations is
-- a family, and presenting an already-rotated token revokes the family
-- (it means the cookie was copied).
create table refresh_tokens (
    token_hash  bytea       not null constraint refresh_tokens_pkey primary key,
    family      uuid        not null,
    user_id     text        not null references users (id) on delete cascade,
    created_at  timestamptz not null default now(),
    expires_at  timestamptz not null,
    rotated_at  timestamptz,
    revoked_at  timestamptz
);
create index refresh_tokens_family on refresh_tokens (family);
create index refresh_tokens_expiry on refresh_tokens (expires_at);

-- One row per audited request. `seq` is assigned by the writer under an
-- advisory lock, so it is gap-free; `hash` = SHA-256(prev_hash || the
-- canonical JSON of the row), so editing, deleting or reordering rows breaks
-- the chain (`tokenusage audit verify`). `params` is the JSON text exactly
-- as hashed (jsonb would reorder keys).
create table audit_log (
    seq         bigint      not null constraint audit_log_pkey primary key,
    at          timestamptz not null,
    actor       text,
    actor_role  text,
    action      text        not null,
    method      text        not null,
    endpoint    text        not null,
    subject     text,
    params      text        not null,
    rows        bigint,
    outcome     text        not null,
    status      integer     not null,
    ip          text,
    user_agent  text,
    request_id  text,
    prev_hash   bytea       not null,
    hash        bytea       not null
);
create index audit_log_at on audit_log (at);
create index audit_log_subject on audit_log (subject, at);
create index audit_log_actor on audit_log (actor, at);

-- Append-only for everyone who cannot alter the table (the application
-- role in a least-privilege deployment, see docs/SECURITY.md): no UPDATE,
-- DELETE or TRUNCATE. An owner who disables the triggers is still caught by
-- the hash chain.
create function audit_log_is_append_only() returns trigger language plpgsql as $$
begin
    raise exception 'audit_log is append-only (% refused)', tg_op using errcode = 'insufficient_privilege';
end
$$;
create trigger audit_log_no_update_or_delete before update or delete on audit_log
    for each row execute function audit_log_is_append_only();
create trigger audit_log_no_truncate before truncate on audit_log
    for each statement execute function audit_log_is_append_only();
