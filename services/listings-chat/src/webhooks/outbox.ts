/**
 * The webhooks' table `webhook_deliveries` as the sender uses it (CONTRACT §9; schema.ts says what each column
 * means). The rows are written by the write functions in the transaction of each change; here they are
 * claimed, settled, listed, requeued and removed. Every statement is short and holds no lock while Node waits
 * for the receiver: a claim leases its rows by moving `next_attempt_at` past the attempt's time-out instead.
 */
import { sql } from "drizzle-orm";
import type { Database } from "../db/client.ts";
import { rowsOf } from "../events/log.ts";

/** A delivery claimed for one attempt: what to POST, and the attempt number that fences its result. */
export interface ClaimedDelivery {
  id: number;
  /** `{"type","timestamp","data"}` as JSON text, built by PostgreSQL from the row (never parsed here). */
  body: string;
  type: string;
  attempts: number;
  /** When the change was recorded (epoch ms): the payload's `timestamp` and the lag's start. */
  recordedAt: number;
  /** From when WEBHOOK_MAX_AGE_S counts (epoch ms). */
  retryFrom: number;
}

/** The `webhook-id` of a row: stable across attempts and instances. */
export const webhookIdOf = (id: number) => `msg_${id}`;

/** The row of a `webhook-id`, or undefined when it is not one of ours. */
export function rowIdOf(webhookId: string): number | undefined {
  const match = /^msg_([1-9][0-9]{0,15})$/.exec(webhookId);
  return match ? Number(match[1]) : undefined;
}

/** What an attempt came to, to be written back in one statement with others. */
export type AttemptResult =
  | { id: number; attempts: number; delivered: true }
  | { id: number; attempts: number; delivered: false; error: string; retryInMs: number };

/** Keeps the write functions recording (lc_webhooks_on) for ten minutes from now, at least. */
export async function renewLease(db: Database): Promise<void> {
  await db.execute(sql`
    insert into webhook_lease (singleton, until) values (true, now() + interval '10 minutes')
    on conflict (singleton) do update set until = greatest(webhook_lease.until, excluded.until)`);
}

/**
 * Up to `limit` due deliveries, oldest due first, leased for `leaseMs` (their `next_attempt_at` moved past it and
 * their attempt counted): no other instance takes them until then, and if this one dies they are due again.
 * `remindersOnly`: only the unread reminders not yet tried (recorded due at `-infinity`, lc_notify_unread), found
 * at the head of the due index however long the queue behind them.
 */
export async function claimDue(
  db: Database,
  limit: number,
  leaseMs: number,
  remindersOnly = false,
): Promise<ClaimedDelivery[]> {
  const rows = rowsOf<{
    id: string | number;
    body: string;
    type: string;
    attempts: number;
    recorded_ms: string | number;
    retry_from_ms: string | number;
  }>(
    await db.execute(sql`
      update webhook_deliveries d
      set next_attempt_at = now() + make_interval(secs => ${leaseMs / 1000}), attempts = d.attempts + 1
      from (select w.id from webhook_deliveries w
            where ${remindersOnly ? sql`w.next_attempt_at = '-infinity'` : sql`w.next_attempt_at <= now()`}
            order by w.next_attempt_at limit ${limit}
            for update skip locked) due
      where d.id = due.id
      returning d.id, d.type, d.attempts,
        json_build_object('type', d.type, 'timestamp', lc_iso(d.created_at), 'data', d.data)::text as body,
        floor(extract(epoch from d.created_at) * 1000)::bigint as recorded_ms,
        floor(extract(epoch from d.retry_from) * 1000)::bigint as retry_from_ms`),
  );
  return rows
    .map((row) => ({
      id: Number(row.id),
      body: row.body,
      type: row.type,
      attempts: row.attempts,
      recordedAt: Number(row.recorded_ms),
      retryFrom: Number(row.retry_from_ms),
    }))
    .sort((a, b) => a.id - b.id);
}

/**
 * Writes attempts' results: delivered ones are done (a 2xx wins over anything: a row that died meanwhile, its
 * result written late, is delivered, not dead); failed ones are due again after their wait, but never later
 * than the end of their WEBHOOK_MAX_AGE_S (counted from `retry_from`), when one more failure kills them. A
 * failure is written only if no other attempt was claimed since (the lease ran out and another instance took
 * the row): the newer attempt owns the row. Answers the ids that died.
 */
export async function settleAttempts(db: Database, results: AttemptResult[], maxAgeS: number): Promise<number[]> {
  const delivered = results.filter((r) => r.delivered).map((r) => r.id);
  const failed = results.filter((r): r is Extract<AttemptResult, { delivered: false }> => !r.delivered);
  const died: number[] = [];
  if (delivered.length > 0) {
    await db.execute(sql`
      update webhook_deliveries d set next_attempt_at = null, delivered_at = now(), dead_at = null
      where d.id = any(${sql.param(delivered)}::bigint[]) and d.delivered_at is null`);
  }
  if (failed.length > 0) {
    const rows = rowsOf<{ id: string | number }>(
      await db.execute(sql`
        update webhook_deliveries d
        set dead_at = case when d.retry_from + make_interval(secs => ${maxAgeS}) <= now() then now() end,
          next_attempt_at = case when d.retry_from + make_interval(secs => ${maxAgeS}) <= now() then null
            else least(now() + make_interval(secs => f.wait_ms / 1000.0),
                       d.retry_from + make_interval(secs => ${maxAgeS})) end,
          last_error = f.error
        from unnest(${sql.param(failed.map((r) => r.id))}::bigint[],
                    ${sql.param(failed.map((r) => r.attempts))}::integer[],
                    ${sql.param(failed.map((r) => r.retryInMs))}::bigint[],
                    ${sql.param(failed.map((r) => r.error))}::text[]) as f(id, attempts, wait_ms, error)
        where d.id = f.id and d.attempts = f.attempts and d.delivered_at is null and d.dead_at is null
        returning d.id, d.dead_at is not null as dead`),
    );
    for (const row of rows as Array<{ id: string | number; dead?: boolean }>) if (row.dead) died.push(Number(row.id));
  }
  return died;
}

/**
 * Claimed deliveries never attempted (the instance stops, or its receiver is failing): due again now, and a
 * reminder never tried back at the head of the queue (`-infinity`), where a sender that yields still finds it.
 */
export async function releaseClaims(db: Database, claims: Array<{ id: number; attempts: number }>): Promise<void> {
  if (claims.length === 0) return;
  await db.execute(sql`
    update webhook_deliveries d
    set next_attempt_at = case when d.type = 'notification.unread' and d.attempts = 1 then '-infinity' else now() end,
      attempts = d.attempts - 1
    from unnest(${sql.param(claims.map((c) => c.id))}::bigint[],
                ${sql.param(claims.map((c) => c.attempts))}::integer[]) as c(id, attempts)
    where d.id = c.id and d.attempts = c.attempts and d.delivered_at is null and d.dead_at is null`);
}

/**
 * Due deliveries past WEBHOOK_MAX_AGE_S, dead without another attempt: while a receiver is down, the sender
 * only probes it, and these would otherwise wait for their turn. At most `limit`; answers how many.
 */
export async function expireOverdue(db: Database, maxAgeS: number, limit: number, error: string): Promise<number> {
  const rows = rowsOf<{ id: string | number }>(
    await db.execute(sql`
      update webhook_deliveries d set next_attempt_at = null, dead_at = now(),
        last_error = coalesce(d.last_error, ${error})
      from (select w.id from webhook_deliveries w
            where w.next_attempt_at <= now() and w.retry_from + make_interval(secs => ${maxAgeS}) <= now()
            order by w.next_attempt_at limit ${limit}
            for update skip locked) due
      where d.id = due.id
      returning d.id`),
  );
  return rows.length;
}

/** `GET /internal/chat/webhooks/dead`: the oldest dead deliveries first. */
export interface DeadDelivery {
  webhook_id: string;
  type: string;
  attempts: number;
  last_error: string | null;
  created_at: string;
}

export async function listDead(db: Database, limit: number): Promise<DeadDelivery[]> {
  const rows = rowsOf<{
    id: string | number;
    type: string;
    attempts: number;
    last_error: string | null;
    created_at: string;
  }>(
    await db.execute(sql`
      select d.id, d.type, d.attempts, d.last_error, lc_iso(d.created_at) as created_at
      from webhook_deliveries d where d.dead_at is not null order by d.id limit ${limit}`),
  );
  return rows.map((row) => ({
    webhook_id: webhookIdOf(Number(row.id)),
    type: row.type,
    attempts: row.attempts,
    last_error: row.last_error,
    created_at: row.created_at,
  }));
}

/**
 * Dead deliveries due again now, with WEBHOOK_MAX_AGE_S counted from now and their attempts from zero: the
 * given ones (ids not dead are ignored), or all, `batch` rows per statement. Answers how many.
 */
export async function requeueDead(db: Database, ids: number[] | undefined, batch = 1_000): Promise<number> {
  let requeued = 0;
  for (;;) {
    const rows = rowsOf<{ id: string | number }>(
      await db.execute(sql`
        update webhook_deliveries d
        set dead_at = null, next_attempt_at = now(), retry_from = now(), attempts = 0
        from (select w.id from webhook_deliveries w
              where w.dead_at is not null and w.delivered_at is null
                and (${ids === undefined} or w.id = any(${sql.param(ids ?? [])}::bigint[]))
              order by w.id limit ${batch}
              for update skip locked) dead
        where d.id = dead.id
        returning d.id`),
    );
    requeued += rows.length;
    if (rows.length < batch) return requeued;
  }
}

/** Delivered rows older than `keepS`, `batch` at a time, at most `batches` statements: answers how many went. */
export async function removeDelivered(db: Database, keepS: number, batch: number, batches: number): Promise<number> {
  let removed = 0;
  for (let i = 0; i < batches; i += 1) {
    const rows = rowsOf<{ id: string | number }>(
      await db.execute(sql`
        delete from webhook_deliveries d
        where d.id in (select w.id from webhook_deliveries w
                       where w.delivered_at < now() - make_interval(secs => ${keepS})
                       order by w.id limit ${batch}
                       for update skip locked)
        returning d.id`),
    );
    removed += rows.length;
    if (rows.length < batch) break;
  }
  return removed;
}

/**
 * Moves what lc_report, lc_block_user and lc_unblock_user recorded in `safety_events` before 0027 (and what
 * instances of the release before record during a rollout) into the queue, `batch` at a time.
 */
export async function adoptSafetyEvents(db: Database, batch: number): Promise<number> {
  const rows = rowsOf<{ id: string | number }>(
    await db.execute(sql`
      with moved as (
        delete from safety_events s
        where s.id in (select e.id from safety_events e order by e.id limit ${batch} for update skip locked)
        returning s.type, s.data, s.created_at)
      insert into webhook_deliveries (type, data, created_at)
      select m.type, m.data, m.created_at from moved m
      returning id`),
  );
  return rows.length;
}

/** Records the unread reminders now due (lc_notify_unread), at most `limit`; answers how many. */
export async function recordDueReminders(db: Database, afterS: number, limit: number): Promise<number> {
  const rows = rowsOf<{ recorded: number }>(
    await db.execute(sql`select lc_notify_unread(${afterS}, ${limit}) as recorded`),
  );
  return Number(rows[0]?.recorded ?? 0);
}

/** `webhooks` of `/internal/chat/ws/stats`. */
export interface WebhookCounts {
  pending: number;
  dead: number;
  oldest_pending_s: number;
}

/** Counted over the partial indexes of pending and dead rows: the delivered rows are not read. */
export async function countDeliveries(db: Database): Promise<WebhookCounts> {
  const rows = rowsOf<{ pending: string | number; dead: string | number; oldest_s: string | number | null }>(
    await db.execute(sql`
      select p.pending, p.oldest_s, (select count(*) from webhook_deliveries w where w.dead_at is not null) as dead
      from (select count(*) as pending, extract(epoch from now() - min(w.created_at)) as oldest_s
            from webhook_deliveries w where w.next_attempt_at is not null) p`),
  );
  const row = rows[0];
  return {
    pending: Number(row?.pending ?? 0),
    dead: Number(row?.dead ?? 0),
    oldest_pending_s: row?.oldest_s == null ? 0 : Math.max(0, Math.floor(Number(row.oldest_s))),
  };
}
