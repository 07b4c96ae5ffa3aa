import { startChildSpan } from "@listings-chat/shared/node";
import type pg from "pg";

/** Told of every query a pool's clients ran: its first keyword (`select`, `insert`, `begin`…) and duration. */
export type QueryObserver = (operation: string, seconds: number) => void;

/** The statement's first keyword, lowercased: a bounded label, never the query text. */
function operationOf(query: unknown): string {
  const text = typeof query === "string" ? query : (query as { text?: unknown } | undefined)?.text;
  if (typeof text !== "string") return "other";
  const keyword = /^\s*([a-zA-Z]+)/.exec(text)?.[1]?.toLowerCase();
  return keyword && keyword.length <= 12 ? keyword : "other";
}

/**
 * Times every query of a client (node-postgres's `query`, promise or callback form, which drizzle and the
 * pool's own `pool.query` both end in), from the call to its answer or error.
 */
export function timeQueries(client: pg.PoolClient, observe: QueryObserver): void {
  const query = client.query;
  const timed = function (this: pg.PoolClient, ...args: unknown[]) {
    const started = performance.now();
    const operation = operationOf(args[0]);
    // A child of the request's span when tracing is on (a no-op span otherwise).
    const span = startChildSpan(`pg ${operation}`, { "db.system.name": "postgresql", "db.operation.name": operation });
    const done = () => {
      span.end();
      observe(operation, (performance.now() - started) / 1_000);
    };
    const last = args.at(-1);
    if (typeof last === "function") {
      args[args.length - 1] = (...result: unknown[]) => {
        done();
        return (last as (...r: unknown[]) => unknown)(...result);
      };
      return (query as (...a: unknown[]) => unknown).apply(this, args);
    }
    const result = (query as (...a: unknown[]) => unknown).apply(this, args);
    if (result && typeof (result as Promise<unknown>).then === "function")
      (result as Promise<unknown>).then(done, done);
    return result;
  };
  client.query = timed as typeof client.query;
}
