/**
 * The webhooks' table as the sender uses it (src/webhooks/outbox.ts), on PGlite and PostgreSQL: leases that
 * keep two claimers apart and lapse, results fenced by the attempt, death after WEBHOOK_MAX_AGE_S, the dead
 * list's retry, removal of delivered rows in batches, the adoption of safety_events, and the lease that
 * switches recording on and off.
 */
import { type SQL, sql } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import {
  adoptSafetyEvents,
  claimDue,
  countDeliveries,
  expireOverdue,
  listDead,
  releaseClaims,
  removeDelivered,
  renewLease,
  requeueDead,
  settleAttempts,
  webhookIdOf,
} from "../src/webhooks/outbox.ts";
import { databaseTargets, suiteDatabase } from "./support/databases.ts";

describe.each(databaseTargets())("webhook outbox on $name", (target) => {
  const database = suiteDatabase(target);

  const query = async <T>(text: SQL): Promise<T[]> =>
    ((await database().db.execute(text)) as unknown as { rows: T[] }).rows;

  /** `count` deliveries recorded `ageS` seconds ago (their due time then too). */
  async function record(count: number, ageS = 0, type = "message.created"): Promise<number[]> {
    const inserted = await query<{ id: string | number }>(sql`
      insert into webhook_deliveries (type, data, created_at, next_attempt_at, retry_from)
      select ${type}, jsonb_build_object('n', g), now() - make_interval(secs => ${ageS}),
        now() - make_interval(secs => ${ageS}), now() - make_interval(secs => ${ageS})
      from generate_series(1, ${count}) g
      returning id`);
    return inserted.map((r) => Number(r.id));
  }

  async function clear() {
    await database().db.execute(sql`delete from webhook_deliveries`);
  }

  it("records nothing without the lease, and everything while it holds", async () => {
    await clear();
    const on = async () => (await query<{ on: boolean }>(sql`select lc_webhooks_on() as on`))[0]?.on;
    expect(await on()).toBe(false);
    const report = () =>
      database().db.execute(sql`select * from lc_block_user(${Math.floor(Math.random() * 1e9) + 1}, 7, 100)`);
    await report();
    expect((await countDeliveries(database().db)).pending).toBe(0);
    await renewLease(database().db);
    expect(await on()).toBe(true);
    await report();
    expect((await countDeliveries(database().db)).pending).toBe(1);
    // Lapsed (the last sender stopped ten minutes ago): recording stops by itself.
    await database().db.execute(sql`update webhook_lease set until = now() - interval '1 second'`);
    expect(await on()).toBe(false);
    await report();
    expect((await countDeliveries(database().db)).pending).toBe(1);
    // Renewing never shortens what another instance took.
    await database().db.execute(sql`update webhook_lease set until = now() + interval '1 hour'`);
    await renewLease(database().db);
    const [lease] = await query<{ minutes: number }>(
      sql`select extract(epoch from until - now())::int / 60 as minutes from webhook_lease`,
    );
    expect(Number(lease?.minutes)).toBeGreaterThanOrEqual(59);
  });

  it("leases claims: a second claimer gets other rows, and the lease lapses into due again", async () => {
    await clear();
    const ids = await record(6);
    const first = await claimDue(database().db, 4, 60_000);
    const second = await claimDue(database().db, 4, 60_000);
    expect(first.map((c) => c.id)).toEqual(ids.slice(0, 4));
    expect(second.map((c) => c.id)).toEqual(ids.slice(4));
    expect(await claimDue(database().db, 4, 60_000)).toEqual([]);
    expect(first.every((c) => c.attempts === 1)).toBe(true);
    // The body is the contract's, built by PostgreSQL: type, timestamp, data.
    const body = JSON.parse(first[0]!.body);
    expect(Object.keys(body)).toEqual(["type", "timestamp", "data"]);
    expect(body).toMatchObject({ type: "message.created", data: { n: 1 } });
    expect(new Date(body.timestamp).getTime()).toBe(first[0]!.recordedAt);
    // An instance died holding them: once the lease ends, they are due again (a second attempt, same id).
    await database().db.execute(sql`update webhook_deliveries set next_attempt_at = now() - interval '1 ms'`);
    const again = await claimDue(database().db, 10, 60_000);
    expect(again.map((c) => [c.id, c.attempts])).toEqual(ids.map((id) => [id, 2]));
  });

  it("fences results by attempt, retries failures later, and kills them past the maximum age", async () => {
    await clear();
    const [young, raced] = await record(2);
    const [old] = await record(1, 120);
    const claims = await claimDue(database().db, 10, 60_000);
    expect(claims).toHaveLength(3);
    const byId = new Map(claims.map((c) => [c.id, c]));
    // `raced` was claimed again by another instance after its lease ran out: this instance's result is stale.
    await database().db.execute(sql`update webhook_deliveries set attempts = attempts + 1 where id = ${raced!}`);
    const died = await settleAttempts(
      database().db,
      [
        { id: young!, attempts: byId.get(young!)!.attempts, delivered: false, error: "HTTP 500", retryInMs: 30_000 },
        { id: old!, attempts: byId.get(old!)!.attempts, delivered: false, error: "HTTP 503", retryInMs: 30_000 },
        { id: raced!, attempts: byId.get(raced!)!.attempts, delivered: false, error: "stale", retryInMs: 1 },
      ],
      60,
    );
    // `old` was recorded 120 s ago with a maximum age of 60 s: dead.
    expect(died).toEqual([old]);
    const state = await query<{
      id: string | number;
      due_in_s: number | null;
      dead: boolean;
      last_error: string | null;
    }>(sql`
      select id, extract(epoch from next_attempt_at - now())::int as due_in_s, dead_at is not null as dead, last_error
      from webhook_deliveries order by id`);
    const find = (id: number) => state.find((s) => Number(s.id) === id)!;
    expect(find(young!)).toMatchObject({ dead: false, last_error: "HTTP 500" });
    expect(Number(find(young!).due_in_s)).toBeGreaterThanOrEqual(28);
    expect(find(raced!).last_error).toBeNull();
    expect(find(raced!).dead).toBe(false);
    expect(find(old!)).toMatchObject({ dead: true, due_in_s: null, last_error: "HTTP 503" });
    // A delivered result is written whoever holds the row now.
    await settleAttempts(database().db, [{ id: raced!, attempts: 1, delivered: true }], 60);
    const [delivered] = await query<{ n: number }>(
      sql`select count(*)::int as n from webhook_deliveries where delivered_at is not null and next_attempt_at is null`,
    );
    expect(delivered?.n).toBe(1);
    expect(await countDeliveries(database().db)).toMatchObject({ pending: 1, dead: 1 });
  });

  it("lets a late 2xx win over a death, never requeues a delivered row, and ends waits at the maximum age", async () => {
    await clear();
    const [late, capped] = await record(2, 50);
    const claims = await claimDue(database().db, 10, 60_000);
    // `late` died meanwhile (another instance's failure, or the breaker's expiry), then its 2xx is written.
    await database().db.execute(
      sql`update webhook_deliveries set next_attempt_at = null, dead_at = now() where id = ${late!}`,
    );
    await settleAttempts(database().db, [{ id: late!, attempts: claims[0]!.attempts, delivered: true }], 60);
    // `capped` fails with an hour to wait, but its 60 s of age end in 10 s: it is tried then, not in an hour.
    await settleAttempts(
      database().db,
      [{ id: capped!, attempts: claims[1]!.attempts, delivered: false, error: "HTTP 502", retryInMs: 3_600_000 }],
      60,
    );
    const state = await query<{ id: string | number; delivered: boolean; dead: boolean; due_in_s: number | null }>(sql`
      select id, delivered_at is not null as delivered, dead_at is not null as dead,
        round(extract(epoch from next_attempt_at - now()))::int as due_in_s
      from webhook_deliveries order by id`);
    expect(state.map((r) => [Number(r.id), r.delivered, r.dead])).toEqual([
      [late, true, false],
      [capped, false, false],
    ]);
    expect(Number(state[1]!.due_in_s)).toBeGreaterThanOrEqual(8);
    expect(Number(state[1]!.due_in_s)).toBeLessThanOrEqual(10);
    expect(await listDead(database().db, 10)).toEqual([]);
    // Even marked dead by hand afterwards, a delivered row is not sent again.
    await database().db.execute(sql`update webhook_deliveries set dead_at = now() where id = ${late!}`);
    expect(await requeueDead(database().db, undefined)).toBe(0);
  });

  it("lists the dead, requeues them with a fresh age, and expires overdue ones without an attempt", async () => {
    await clear();
    const ids = await record(3, 7_200);
    // Overdue while the receiver was failing: dead without an attempt, the reason kept.
    expect(await expireOverdue(database().db, 3_600, 2, "expired while down")).toBe(2);
    expect(await expireOverdue(database().db, 3_600, 2, "expired while down")).toBe(1);
    const dead = await listDead(database().db, 10);
    expect(dead.map((d) => d.webhook_id)).toEqual(ids.map(webhookIdOf));
    expect(dead[0]).toMatchObject({ type: "message.created", attempts: 0, last_error: "expired while down" });
    expect(new Date(dead[0]!.created_at).getTime()).toBeLessThan(Date.now() - 7_000_000);
    expect(await listDead(database().db, 1)).toHaveLength(1);
    // One named, then the rest (in batches of 1 here).
    expect(await requeueDead(database().db, [ids[1]!, 999_999_999])).toBe(1);
    expect(await requeueDead(database().db, undefined, 1)).toBe(2);
    expect(await listDead(database().db, 10)).toEqual([]);
    const claims = await claimDue(database().db, 10, 60_000);
    expect(claims.map((c) => c.id).sort((a, b) => a - b)).toEqual(ids);
    // A fresh age: a failure now is retried, not dead at once.
    expect(claims.every((c) => Date.now() - c.retryFrom < 60_000)).toBe(true);
    await releaseClaims(database().db, claims);
    const again = await claimDue(database().db, 10, 60_000);
    expect(again.map((c) => c.attempts)).toEqual([1, 1, 1]);
  });

  it("claims the new reminders alone when asked, and gives an untried one back to the head of the queue", async () => {
    await clear();
    const older = await record(3, 60);
    const [reminder, retried] = await query<{ id: string | number }>(sql`
      insert into webhook_deliveries (type, data, next_attempt_at, attempts)
      values ('notification.unread', '{}'::jsonb, '-infinity', 0),
             ('notification.unread', '{}'::jsonb, now() - interval '1 second', 1)
      returning id`);
    // Only the one recorded at -infinity: not the older rows, nor a reminder already tried once.
    const claimed = await claimDue(database().db, 10, 60_000, true);
    expect(claimed.map((c) => c.id)).toEqual([Number(reminder!.id)]);
    expect(await claimDue(database().db, 10, 60_000, true)).toEqual([]);
    // Given back untried (a stop, a breaker): at the head again, where the next reminders-only claim finds it.
    await releaseClaims(database().db, claimed);
    const [state] = await query<{ head: boolean; attempts: number }>(sql`
      select next_attempt_at = '-infinity' as head, attempts from webhook_deliveries where id = ${reminder!.id}`);
    expect(state).toEqual({ head: true, attempts: 0 });
    expect((await claimDue(database().db, 10, 60_000, true)).map((c) => c.id)).toEqual([Number(reminder!.id)]);
    // A claim of everything takes the rest, the reminder tried before with them.
    const rest = await claimDue(database().db, 10, 60_000);
    expect(rest.map((c) => c.id).sort((a, b) => a - b)).toEqual([...older, Number(retried!.id)]);
    // Given back, a message's row is due now, not at the head.
    await releaseClaims(database().db, rest);
    const heads = await query<{ n: number }>(sql`
      select count(*)::int as n from webhook_deliveries where next_attempt_at = '-infinity'`);
    expect(heads[0]!.n).toBe(0);
  });

  it("removes delivered rows past the window in small batches, nothing else", async () => {
    await clear();
    const ids = await record(25);
    await database().db.execute(sql`
      update webhook_deliveries set next_attempt_at = null, delivered_at = now() - interval '2 hours'
      where id <= ${ids[19]!}`);
    // 20 delivered two hours ago, 5 pending; keep one hour, 8 per statement, at most 2 statements: 16 go.
    expect(await removeDelivered(database().db, 3_600, 8, 2)).toBe(16);
    expect(await removeDelivered(database().db, 3_600, 8, 2)).toBe(4);
    expect(await removeDelivered(database().db, 3_600, 8, 2)).toBe(0);
    // Kept: the pending ones, and delivered ones younger than the window.
    await database().db.execute(
      sql`update webhook_deliveries set next_attempt_at = null, delivered_at = now() where id = ${ids[24]!}`,
    );
    expect(await removeDelivered(database().db, 3_600, 8, 2)).toBe(0);
    const [left] = await query<{ n: number }>(sql`select count(*)::int as n from webhook_deliveries`);
    expect(left?.n).toBe(5);
  });

  it("adopts what safety_events kept before 0027, in batches, with its time and data", async () => {
    await clear();
    await database().db.execute(sql`
      insert into safety_events (type, data, created_at)
      select 'user.blocked', jsonb_build_object('blocker_id', g, 'blocked_id', g + 1), now() - interval '1 day'
      from generate_series(1, 5) g`);
    expect(await adoptSafetyEvents(database().db, 3)).toBe(3);
    expect(await adoptSafetyEvents(database().db, 3)).toBe(2);
    expect(await adoptSafetyEvents(database().db, 3)).toBe(0);
    const adopted = await query<{ type: string; data: { blocker_id: number }; age_h: number }>(sql`
      select type, data, extract(epoch from now() - created_at)::int / 3600 as age_h from webhook_deliveries order by id`);
    expect(adopted.map((a) => a.data.blocker_id)).toEqual([1, 2, 3, 4, 5]);
    expect(adopted.every((a) => a.type === "user.blocked" && Number(a.age_h) === 24)).toBe(true);
    // Age counted from the adoption, not the record: a day-old event is not dead on its first failure.
    const claims = await claimDue(database().db, 10, 60_000);
    expect(claims.every((c) => Date.now() - c.retryFrom < 60_000)).toBe(true);
  });
});
