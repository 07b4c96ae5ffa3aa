/**
 * What main.ts decides before it loads anything: whether this process serves the gateway itself (the
 * default), supervises GATEWAY_WORKERS workers, or is one of them. It imports nothing, so that main.ts can
 * read it right after catching the stop signals; the variables are checked in full by env.ts, in each worker.
 */

/** The argument a supervisor gives its workers: `--gateway-worker=<1..N>`. */
export const WORKER_ARGUMENT = "--gateway-worker";

/** This process's worker number when a supervisor started it, from its arguments; undefined otherwise. */
export function workerNumberOf(argv: readonly string[]): number | undefined {
  const prefix = `${WORKER_ARGUMENT}=`;
  const argument = argv.find((arg) => arg.startsWith(prefix));
  if (argument === undefined) return undefined;
  const number = Number(argument.slice(prefix.length));
  return Number.isInteger(number) && number >= 1 ? number : undefined;
}

/**
 * The number of workers to supervise when GATEWAY_WORKERS asks for more than one, else undefined: the
 * process then serves alone, and a value that is not a whole number is refused by env.ts with its message.
 */
export function workersToSupervise(env: Record<string, string | undefined>): number | undefined {
  const value = env.GATEWAY_WORKERS?.trim();
  if (!value || !/^\d{1,9}$/.test(value)) return undefined;
  const count = Number(value);
  return count > 1 ? count : undefined;
}
