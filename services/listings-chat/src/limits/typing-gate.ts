import type { Redis } from "ioredis";

/**
 * Decides which typing frames are relayed. "Typing" is relayed at most once per interval per user and chat
 * (CONTRACT §5 and §10: 2 s) whatever came in between: a "stopped" does not reset the interval, or typing
 * alternating true/false would pass every frame. "Stopped typing" is a change of state and goes out at
 * once, once, after a "typing" that went out (so a peer's indicator goes away at once, and a flood of
 * "stopped" frames relays nothing). So in any span of `n` intervals at most `n + 1` "typing" frames and as
 * many "stopped" frames go out per user and chat.
 */
export type TypingGate = (userId: number, chatId: number, isTyping: boolean) => Promise<boolean>;

/** How long a relayed "typing" is remembered for its "stopped" to be relayed: longer than any indicator shows. */
const TYPING_STATE_MS = 30_000;

/** Per instance: enough with one chat instance. */
export function createMemoryTypingGate(intervalMs: number, now: () => number = Date.now): TypingGate {
  /** When "typing" last went out, per user and chat: the throttle, which a "stopped" leaves alone. */
  const lastTyping = new Map<string, number>();
  /** The user and chats whose latest relayed frame is a "typing" (deleted by the "stopped" that follows it). */
  const typing = new Set<string>();
  return async (userId, chatId, isTyping) => {
    const t = now();
    // Forget stale entries in passing, so the map holds only the recent typists.
    if (lastTyping.size > 1_000)
      for (const [key, at] of lastTyping)
        if (t - at >= TYPING_STATE_MS) {
          lastTyping.delete(key);
          typing.delete(key);
        }
    const key = `${userId}:${chatId}`;
    const last = lastTyping.get(key);
    if (!isTyping) return typing.delete(key) && t - last! < TYPING_STATE_MS;
    if (last !== undefined && t - last < intervalMs) return false;
    lastTyping.set(key, t);
    typing.add(key);
    return true;
  };
}

/**
 * KEYS[1]: the throttle of "typing" (expires after the interval; a "stopped" leaves it); KEYS[2]: "a typing
 * went out" (expires after TYPING_STATE_MS; a "stopped" takes it). Both in one hash slot. Returns 1 when the
 * frame is relayed.
 */
const GATE = `
if ARGV[1] == '1' then
  if redis.call('SET', KEYS[1], '1', 'PX', ARGV[2], 'NX') then
    redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
    return 1
  end
  return 0
end
return redis.call('DEL', KEYS[2])
`;

/** Shared by every instance: a user with sockets on two instances still types at most once per interval. */
export function createRedisTypingGate(redis: Redis, keyPrefix: string, intervalMs: number): TypingGate {
  if (!("typingGate" in redis)) redis.defineCommand("typingGate", { numberOfKeys: 2, lua: GATE });
  const run = redis as Redis & {
    typingGate(throttle: string, state: string, isTyping: 0 | 1, intervalMs: number, stateMs: number): Promise<number>;
  };
  return async (userId, chatId, isTyping) => {
    const slot = `${keyPrefix}typing:{${userId}:${chatId}}`;
    return (
      (await run.typingGate(`${slot}:throttle`, `${slot}:typing`, isTyping ? 1 : 0, intervalMs, TYPING_STATE_MS)) === 1
    );
  };
}
