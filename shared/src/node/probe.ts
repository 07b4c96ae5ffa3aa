/**
 * What `read` answers within `timeoutMs`, or null when it rejects or takes longer. For stats and probes, which must
 * answer quickly whatever the dependency does (a database that does not answer, a Redis that retries for a while).
 */
export function answerWithin<T>(read: () => Promise<T>, timeoutMs: number): Promise<T | null> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    read().catch(() => null),
    new Promise<null>((resolve) => {
      timer = setTimeout(resolve, timeoutMs, null);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Whether `check` succeeds within `timeoutMs`: false when it rejects or takes longer (readiness probes). */
export async function succeedsWithin(check: () => Promise<unknown>, timeoutMs: number): Promise<boolean> {
  return (await answerWithin(() => check().then(() => true), timeoutMs)) ?? false;
}
