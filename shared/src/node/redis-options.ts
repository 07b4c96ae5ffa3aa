/**
 * Options of every ioredis client that sends commands: a command is retried twice across reconnects, and
 * none waits more than 2 s for its answer (a paused or partitioned Redis costs callers 2 s, not forever).
 */
export const redisCommandOptions = { maxRetriesPerRequest: 2, commandTimeout: 2_000 } as const;
