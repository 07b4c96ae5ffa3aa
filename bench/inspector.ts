/**
 * A service's V8 inspector, for the memory measurements: a process started with
 * `NODE_OPTIONS=--inspect=127.0.0.1:<port>` (loopback, benchmarks only) can be asked to collect its garbage
 * and to say what its heap holds, so that memory is read after a full collection rather than whenever one
 * happened to run.
 */
import WebSocket from "ws";

export interface MemoryUsage {
  rss: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
}

/** The variables that open a service's inspector on `port` (loopback only). */
export const inspectorEnv = (port: number) => ({ NODE_OPTIONS: `--inspect=127.0.0.1:${port}` });

/** Runs `methods` in order on the inspector on `port`; resolves with each one's result. Gives up after 30 s. */
async function call(port: number, methods: { method: string; params?: object }[]): Promise<unknown[]> {
  const targets = (await (await fetch(`http://127.0.0.1:${port}/json/list`)).json()) as {
    webSocketDebuggerUrl: string;
  }[];
  const url = targets[0]?.webSocketDebuggerUrl;
  if (!url) throw new Error(`no inspector target on port ${port}`);
  const socket = new WebSocket(url, { perMessageDeflate: false });
  try {
    await new Promise((resolve, reject) => {
      socket.once("open", resolve);
      socket.once("error", reject);
    });
    const results: unknown[] = [];
    for (const [id, { method, params }] of methods.entries()) {
      results.push(
        await new Promise((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`${method} had no answer within 30 s`)), 30_000);
          const onMessage = (data: WebSocket.RawData) => {
            const answer = JSON.parse(String(data)) as { id?: number; result?: unknown; error?: { message: string } };
            if (answer.id !== id) return;
            clearTimeout(timer);
            socket.off("message", onMessage);
            if (answer.error) reject(new Error(`${method}: ${answer.error.message}`));
            else resolve(answer.result);
          };
          socket.on("message", onMessage);
          socket.send(JSON.stringify({ id, method, params }));
        }),
      );
    }
    return results;
  } finally {
    socket.terminate();
  }
}

/** A full garbage collection in the process, then its memory usage (bytes) as `process.memoryUsage()` reads it. */
export async function collectGarbage(port: number): Promise<MemoryUsage> {
  const [, evaluated] = await call(port, [
    { method: "HeapProfiler.collectGarbage" },
    {
      method: "Runtime.evaluate",
      params: { expression: "JSON.stringify(process.memoryUsage())", returnByValue: true },
    },
  ]);
  return JSON.parse((evaluated as { result: { value: string } }).result.value) as MemoryUsage;
}
