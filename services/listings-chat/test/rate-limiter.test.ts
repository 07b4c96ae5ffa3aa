import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RateLimitedError } from "../src/errors.ts";
import {
  createRateLimiter,
  LIMITED_WRITES,
  type LimitedWrite,
  type RateLimiter,
  type RateLimiterOptions,
} from "../src/limits/rate-limiter.ts";
import { redisNamespace, redisUrl } from "./support/redis.ts";

const redis = redisUrl();

/** A clock the test moves by hand, starting at a realistic epoch time. */
function manualClock(start = 1_700_000_000_000) {
  let t = start;
  return {
    now: () => t,
    at: (offsetMs: number) => {
      t = start + offsetMs;
    },
  };
}

/** One bucket of a limiter, as the sliding-log suite below drives it. */
interface OneBucket {
  consume(userId: number): Promise<void>;
  refund(userId: number): Promise<void>;
}

const bucketOf = (limiter: RateLimiter, write: LimitedWrite): OneBucket => ({
  consume: (userId) => limiter.consume(write, userId),
  refund: (userId) => limiter.refund(write, userId),
});

/** Resolves with the refusal, fails if the write was allowed or failed otherwise. */
async function refusal(limiter: OneBucket, userId: number): Promise<RateLimitedError> {
  const error = await limiter.consume(userId).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(RateLimitedError);
  return error as RateLimitedError;
}

/** Resolves with the refusal's retry_after_ms. */
const refused = async (limiter: OneBucket, userId: number) => (await refusal(limiter, userId)).retryAfterMs;

async function sendTimes(limiter: OneBucket, userId: number, times: number): Promise<void> {
  for (let i = 0; i < times; i++) await limiter.consume(userId);
}

interface Store {
  /** A limiter on this store; limiters made within one test share their counts where the store is shared. */
  limiter(options: Omit<RateLimiterOptions, "redis" | "keyPrefix">): RateLimiter;
}

/** The send bucket of a limiter on `store`, with `perMinute` sends a minute (60 when not given). */
function sendBucket(store: Store, options: { perMinute?: number; now?: () => number }): OneBucket {
  const limits = options.perMinute === undefined ? {} : { send: options.perMinute };
  return bucketOf(store.limiter({ limits, now: options.now }), "send");
}

/** Each bucket's window and limit (CONTRACT §10), and the words its refusal names it with. */
const BUCKETS: { write: LimitedWrite; limit: number; windowMs: number; named: RegExp }[] = [
  { write: "send", limit: 60, windowMs: 60_000, named: /^too many messages \(60 a minute\): try again in \d+ s$/ },
  {
    write: "edit",
    limit: 30,
    windowMs: 60_000,
    named: /^too many edits and deletes \(30 a minute\): try again in \d+ s$/,
  },
  { write: "chat_open", limit: 20, windowMs: 3_600_000, named: /^too many new chats \(20 an hour\): try again in/ },
  { write: "report", limit: 10, windowMs: 3_600_000, named: /^too many reports \(10 an hour\): try again in/ },
  { write: "upload", limit: 30, windowMs: 3_600_000, named: /^too many uploads \(30 an hour\): try again in/ },
  {
    write: "block",
    limit: 30,
    windowMs: 3_600_000,
    named: /^too many blocks and unblocks \(30 an hour\): try again in/,
  },
];

/** Every bucket: its own limit and window, counted apart from the others. */
function keepsEachBucketApart(store: () => Store) {
  let nextUser = 10_000;

  it("covers every limited write", () => {
    expect(BUCKETS.map((b) => b.write).sort()).toEqual([...LIMITED_WRITES].sort());
  });

  it.each(BUCKETS)(
    "$write: lets $limit pass per window, then refuses until the first leaves it, naming the limit",
    async ({ write, limit, windowMs, named }) => {
      const clock = manualClock();
      const limiter = store().limiter({ now: clock.now });
      const bucket = bucketOf(limiter, write);
      const user = nextUser++;
      await sendTimes(bucket, user, limit);
      clock.at(1_000);
      const error = await refusal(bucket, user);
      expect(error.retryAfterMs).toBe(windowMs - 1_000);
      expect(error.status).toBe(429);
      expect(error.code).toBe("rate_limited");
      expect(error.message).toMatch(named);
      expect(error.message).toContain(`try again in ${(windowMs - 1_000) / 1_000} s`);
      // Every other bucket of the same user is untouched.
      for (const other of LIMITED_WRITES.filter((w) => w !== write)) await limiter.consume(other, user);
      // A refund in another bucket gives nothing back in this one.
      await limiter.refund(LIMITED_WRITES.find((w) => w !== write)!, user);
      expect(await refused(bucket, user)).toBe(windowMs - 1_000);
      await limiter.refund(write, user);
      await bucket.consume(user);
      // At the end of the window the first ones leave it; the one counted at 1 s stays a second longer.
      clock.at(windowMs);
      await sendTimes(bucket, user, limit - 1);
      expect(await refused(bucket, user)).toBe(1_000);
    },
  );

  it("takes each bucket's limit from its options", async () => {
    const clock = manualClock();
    const limiter = store().limiter({ limits: { edit: 2, chat_open: 1, send: 3 }, now: clock.now });
    const user = nextUser++;
    await sendTimes(bucketOf(limiter, "edit"), user, 2);
    expect((await refusal(bucketOf(limiter, "edit"), user)).message).toMatch(/edits and deletes \(2 a minute\)/);
    await limiter.consume("chat_open", user);
    expect(await refused(bucketOf(limiter, "chat_open"), user)).toBe(3_600_000);
    await sendTimes(bucketOf(limiter, "send"), user, 3);
    expect(await refused(bucketOf(limiter, "send"), user)).toBe(60_000);
    // Not given: the contract's.
    await sendTimes(bucketOf(limiter, "report"), user, 10);
    expect(await refused(bucketOf(limiter, "report"), user)).toBe(3_600_000);
  });

  it("refuses a limit that is not a positive integer, or an unknown bucket, naming it", () => {
    for (const limit of [0, -1, 1.5, Number.NaN])
      expect(() => store().limiter({ limits: { upload: limit } })).toThrow(/upload limit must be a positive integer/);
    expect(() => store().limiter({ limits: { uploads: 3 } as never })).toThrow(/unknown limit "uploads"/);
  });
}

function behavesAsASlidingLog(store: () => Store) {
  let nextUser = 1;
  const newUser = () => nextUser++;

  it("lets 60 sends pass and refuses the 61st until the first send is 60 s old", async () => {
    const clock = manualClock();
    const limiter = sendBucket(store(), { now: clock.now }); // the default: 60 a minute
    const user = newUser();
    for (let i = 0; i < 60; i++) {
      clock.at(i * 100);
      await limiter.consume(user);
    }
    clock.at(10_000);
    expect(await refused(limiter, user)).toBe(50_000);
    clock.at(59_999);
    expect(await refused(limiter, user)).toBe(1);
    // At 60 s the first send leaves the window: one more passes, and then the second send is the one to wait for.
    clock.at(60_000);
    await limiter.consume(user);
    expect(await refused(limiter, user)).toBe(100);
    clock.at(60_100);
    await limiter.consume(user);
    expect(await refused(limiter, user)).toBe(100);
  });

  it("counts over any 60 s, not per fixed minute: 30 + 30 near a boundary leave room for only 30 more", async () => {
    const clock = manualClock();
    const limiter = sendBucket(store(), { perMinute: 60, now: clock.now });
    const user = newUser();
    await sendTimes(limiter, user, 30);
    clock.at(59_900);
    await sendTimes(limiter, user, 30);
    expect(await refused(limiter, user)).toBe(100);
    clock.at(60_100);
    await sendTimes(limiter, user, 30);
    // 60 sends between 59.9 s and 60.1 s: the next one waits until the batch of 59.9 s is 60 s old.
    expect(await refused(limiter, user)).toBe(59_800);
    clock.at(119_899);
    expect(await refused(limiter, user)).toBe(1);
    clock.at(119_900);
    await sendTimes(limiter, user, 30);
    expect(await refused(limiter, user)).toBe(200);
  });

  it("lets a refused send wait exactly for the oldest send in the window", async () => {
    const clock = manualClock(0);
    const limiter = sendBucket(store(), { perMinute: 3, now: clock.now });
    const user = newUser();
    await limiter.consume(user); // at 0: a score of 0 is a send like any other
    clock.at(20_000);
    await limiter.consume(user);
    clock.at(40_000);
    await limiter.consume(user);
    clock.at(45_000);
    expect(await refused(limiter, user)).toBe(15_000);
    clock.at(60_000);
    await limiter.consume(user);
    expect(await refused(limiter, user)).toBe(20_000);
  });

  it("gives exactly one send back on refund, the latest", async () => {
    const clock = manualClock();
    const limiter = sendBucket(store(), { now: clock.now });
    const user = newUser();
    await sendTimes(limiter, user, 30);
    clock.at(30_000);
    await sendTimes(limiter, user, 30);
    expect(await refused(limiter, user)).toBe(30_000);

    await limiter.refund(user);
    await limiter.consume(user);
    // The latest send was taken back, not the oldest: the wait is still for the sends of 0 s.
    expect(await refused(limiter, user)).toBe(30_000);

    await limiter.refund(user);
    await limiter.refund(user);
    await sendTimes(limiter, user, 2);
    expect(await refused(limiter, user)).toBe(30_000);

    // At 60 s the 30 first leave the window, 30 slots, no more.
    clock.at(60_000);
    await sendTimes(limiter, user, 30);
    expect(await refused(limiter, user)).toBe(30_000);
  });

  it("gives nothing back for a refund with no send in the window", async () => {
    const clock = manualClock();
    const limiter = sendBucket(store(), { perMinute: 2, now: clock.now });
    const user = newUser();
    await limiter.refund(user);
    await limiter.consume(user);
    clock.at(60_000);
    await limiter.refund(user); // that send has already left the window
    await sendTimes(limiter, user, 2);
    expect(await refused(limiter, user)).toBe(60_000);
  });

  it("counts every user on their own", async () => {
    const clock = manualClock();
    const limiter = sendBucket(store(), { now: clock.now });
    const [one, two] = [newUser(), newUser()];
    await sendTimes(limiter, one, 60);
    expect(await refused(limiter, one)).toBe(60_000);
    await sendTimes(limiter, two, 60);
    expect(await refused(limiter, two)).toBe(60_000);
    await limiter.refund(two);
    expect(await refused(limiter, one)).toBe(60_000);
    await limiter.consume(two);
  });

  it("lets exactly the limit through when sends race", async () => {
    const clock = manualClock();
    const limiter = sendBucket(store(), { perMinute: 10, now: clock.now });
    const user = newUser();
    const results = await Promise.allSettled(Array.from({ length: 25 }, () => limiter.consume(user)));
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(10);
    for (const r of results) if (r.status === "rejected") expect(r.reason).toBeInstanceOf(RateLimitedError);
  });

  it("forgets a user whose sends all left the window: a full allowance again", async () => {
    const clock = manualClock();
    const limiter = sendBucket(store(), { perMinute: 5, now: clock.now });
    const [idle, active] = [newUser(), newUser()];
    await sendTimes(limiter, idle, 5);
    clock.at(200_000);
    await limiter.consume(active);
    await sendTimes(limiter, idle, 5);
    expect(await refused(limiter, idle)).toBe(60_000);
  });

  it("refuses a limit that is not a positive integer", () => {
    for (const perMinute of [0, -1, 1.5, Number.NaN])
      expect(() => sendBucket(store(), { perMinute })).toThrow(RangeError);
  });
}

describe("rate limiter in memory", () => {
  const memory = () => ({ limiter: (options: RateLimiterOptions) => createRateLimiter(options) });
  describe("the send bucket", () => behavesAsASlidingLog(memory));
  describe("every bucket", () => keepsEachBucketApart(memory));
});

describe.runIf(redis)("rate limiter on Redis", () => {
  const ns = redis ? redisNamespace(redis) : undefined;
  let client: Redis;
  let prefix = 0;

  beforeAll(() => {
    client = new Redis(redis!);
  });

  afterAll(async () => {
    await ns?.drop();
    await client?.quit();
  });

  // Each store is a key prefix of its own, so that each test starts from empty counts.
  const onRedis = (): Store => {
    const keyPrefix = `${ns!.keyPrefix}${prefix++}:`;
    return { limiter: (options) => createRateLimiter({ ...options, redis: client, keyPrefix }) };
  };
  describe("the send bucket", () => behavesAsASlidingLog(onRedis));
  describe("every bucket", () => keepsEachBucketApart(onRedis));

  it("keeps one sorted set per user and bucket under the key prefix, expiring a window after the latest write", async () => {
    const clock = manualClock();
    const keyPrefix = `${ns!.keyPrefix}keys:`;
    const limiter = createRateLimiter({ redis: client, keyPrefix, now: clock.now });
    await sendTimes(bucketOf(limiter, "send"), 42, 3);
    expect(await client.type(`${keyPrefix}send:42`)).toBe("zset");
    expect(await client.zcard(`${keyPrefix}send:42`)).toBe(3);
    const ttl = await client.pttl(`${keyPrefix}send:42`);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(60_000);
    for (const [write, windowMs] of [
      ["edit", 60_000],
      ["chat_open", 3_600_000],
      ["report", 3_600_000],
      ["upload", 3_600_000],
      ["block", 3_600_000],
    ] as const) {
      await limiter.consume(write, 42);
      expect(await client.zcard(`${keyPrefix}${write}:42`), write).toBe(1);
      const left = await client.pttl(`${keyPrefix}${write}:42`);
      expect(left, write).toBeGreaterThan(windowMs - 10_000);
      expect(left, write).toBeLessThanOrEqual(windowMs);
    }
    // A key left by the fixed-window limiter under the same name does not break sending.
    await client.set(`${keyPrefix}send:43`, "17", "PX", 60_000);
    await limiter.consume("send", 43);
    expect(await client.zcard(`${keyPrefix}send:43`)).toBe(1);
  });

  it("shares the limit between instances on one Redis", async () => {
    const clock = manualClock();
    const keyPrefix = `${ns!.keyPrefix}shared:`;
    const other = new Redis(redis!);
    const one = bucketOf(createRateLimiter({ redis: client, keyPrefix, now: clock.now }), "send");
    const two = bucketOf(createRateLimiter({ redis: other, keyPrefix, now: clock.now }), "send");
    try {
      await sendTimes(one, 1, 30);
      clock.at(1_000);
      await sendTimes(two, 1, 30);
      expect(await refused(one, 1)).toBe(59_000);
      expect(await refused(two, 1)).toBe(59_000);

      // A refund gives back a send of the instance's own.
      await two.refund(1);
      await one.consume(1);
      expect(await refused(two, 1)).toBe(59_000);
      // One that counted nothing for this user has nothing to give back.
      await two.refund(2);
      await sendTimes(one, 2, 60);
      expect(await refused(two, 2)).toBe(60_000);

      // Racing from both instances, exactly the limit passes.
      clock.at(200_000);
      const results = await Promise.allSettled(
        Array.from({ length: 70 }, (_, i) => (i % 2 === 0 ? one : two).consume(3)),
      );
      expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(60);
    } finally {
      await other.quit();
    }
  });
});
