import { Limits } from "@listings-chat/shared";
import type { Redis } from "ioredis";
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes } from "rate-limiter-flexible";
import { RateLimitedError } from "../errors.ts";

/** Counts sends per user, REST and WebSocket together (CONTRACT §5: 60 a minute). */
export interface SendLimiter {
  /** Takes one send from `userId`'s allowance, or throws RateLimitedError. */
  consume(userId: number): Promise<void>;
  /** Gives one back, for a send that was counted but could not be stored. */
  refund(userId: number): Promise<void>;
}

export interface SendLimiterOptions {
  perMinute?: number;
  /** Shared counters for many instances; in-process counters without it. */
  redis?: Redis;
  keyPrefix?: string;
}

export function createSendLimiter(options: SendLimiterOptions = {}): SendLimiter {
  const settings = {
    points: options.perMinute ?? Limits.sendsPerMinute,
    duration: 60,
    keyPrefix: `${options.keyPrefix ?? ""}send`,
  };
  const limiter = options.redis
    ? new RateLimiterRedis({ ...settings, storeClient: options.redis })
    : new RateLimiterMemory(settings);
  return {
    async consume(userId) {
      try {
        await limiter.consume(String(userId));
      } catch (rejection) {
        // rate-limiter-flexible rejects with a RateLimiterRes when over the limit, with an Error when the store fails.
        if (rejection instanceof RateLimiterRes) throw new RateLimitedError(rejection.msBeforeNext);
        throw rejection;
      }
    },
    async refund(userId) {
      await limiter.reward(String(userId), 1).catch(() => {});
    },
  };
}
