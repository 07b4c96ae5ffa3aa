/**
 * Whether `check` succeeds within `timeoutMs`: false when it rejects or takes longer. For readiness
 * probes, which must answer quickly whatever the dependency does (a Redis that is down retries for a while).
 */
export function succeedsWithin(check: () => Promise<unknown>, timeoutMs: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    check().then(
      () => true,
      () => false,
    ),
    new Promise<boolean>((resolve) => {
      timer = setTimeout(resolve, timeoutMs, false);
    }),
  ]).finally(() => clearTimeout(timer));
}
