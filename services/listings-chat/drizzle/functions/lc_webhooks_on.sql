-- Whether the write functions record webhooks (CONTRACT §9): while an instance with WEBHOOK_URL keeps the
-- lease (webhooks/webhooks.ts renews it every 30 s, 10 minutes ahead). A key lookup of a one-row table: with no
-- webhooks configured, that is all they cost a write.
--
-- PL/pgSQL, not SQL: a SQL function called from PL/pgSQL is planned again at every call (its plan lives for one
-- query), which cost each send 40 µs (pgbench of lc_send_messages, one client: 6,400 calls/s against 8,800
-- without it); PL/pgSQL keeps the plan for the session, and the call costs 2 µs.
CREATE OR REPLACE FUNCTION lc_webhooks_on() RETURNS boolean LANGUAGE plpgsql STABLE AS $$
BEGIN
  RETURN EXISTS (SELECT FROM webhook_lease w WHERE w.singleton AND w.until > now());
END
$$;
