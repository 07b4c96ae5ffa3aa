-- Whether the write functions record webhooks (CONTRACT §9): while an instance with WEBHOOK_URL keeps the
-- lease (webhooks/webhooks.ts renews it every 30 s, 10 minutes ahead). A key lookup of a one-row table: with no
-- webhooks configured, that is all they cost a write.
CREATE OR REPLACE FUNCTION lc_webhooks_on() RETURNS boolean LANGUAGE sql STABLE AS $$
  SELECT EXISTS (SELECT FROM webhook_lease w WHERE w.singleton AND w.until > now())
$$;
