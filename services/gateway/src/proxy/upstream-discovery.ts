import { lookup as dnsLookup } from "node:dns/promises";
import type { Logger } from "pino";

/**
 * Where the chat instances are: a fixed base URL (`http://10.0.0.5:8086`), or a name whose addresses are the
 * instances (`dns+http://listings-chat-headless:8086`, a Kubernetes headless Service). Each address is an
 * instance of its own, so that failover, mark-down and upgrade slots stay per instance, which a ClusterIP
 * (one address for all) would hide.
 */
export type UpstreamSource =
  | { kind: "fixed"; base: string }
  | { kind: "dns"; protocol: string; name: string; port: number };

/** An entry of CHAT_UPSTREAMS, or undefined when it is neither form. */
export function parseUpstreamSource(entry: string): UpstreamSource | undefined {
  let url: URL;
  try {
    url = new URL(entry);
  } catch {
    return undefined;
  }
  if (url.search || url.hash) return undefined;
  if (url.protocol === "http:" || url.protocol === "https:") return { kind: "fixed", base: entry.replace(/\/+$/, "") };
  // A name and a port, nothing else: the path of every instance is the root.
  if ((url.protocol === "dns+http:" || url.protocol === "dns+https:") && url.port && /^\/?$/.test(url.pathname)) {
    return { kind: "dns", protocol: url.protocol.slice("dns+".length), name: url.hostname, port: Number(url.port) };
  }
  return undefined;
}

/** Every address of a name (A and AAAA, as getaddrinfo gives them, /etc/hosts included). */
export type AddressLookup = (name: string) => Promise<Array<{ address: string; family: number }>>;

const systemLookup: AddressLookup = (name) => dnsLookup(name, { all: true });

export interface UpstreamDiscoveryOptions {
  sources: UpstreamSource[];
  /** How often names are looked up again. */
  refreshMs: number;
  /** Called with the whole list whenever it changes: sources in their order, each name's addresses sorted. */
  onChange: (bases: string[]) => void;
  log: Logger;
  lookup?: AddressLookup;
}

/**
 * Resolves the sources now and every `refreshMs`. A name that cannot be resolved keeps the instances it had:
 * a DNS blip must not empty the gateway; a name that resolves to nothing (every instance gone) empties them.
 */
export async function startUpstreamDiscovery({
  sources,
  refreshMs,
  onChange,
  log,
  lookup = systemLookup,
}: UpstreamDiscoveryOptions): Promise<{ current(): string[]; refresh(): Promise<void>; stop(): void }> {
  const known = new Map<UpstreamSource, string[]>(
    sources.map((source) => [source, source.kind === "fixed" ? [source.base] : []]),
  );
  let current: string[] = [];
  const publish = () => {
    const next = [...new Set([...known.values()].flat())];
    if (next.length === current.length && next.every((base, i) => base === current[i])) return;
    current = next;
    onChange(next);
  };
  async function refresh() {
    await Promise.all(
      sources.map(async (source) => {
        if (source.kind !== "dns") return;
        try {
          const addresses = await lookup(source.name);
          known.set(
            source,
            addresses
              .map(({ address, family }) =>
                family === 6
                  ? `${source.protocol}//[${address}]:${source.port}`
                  : `${source.protocol}//${address}:${source.port}`,
              )
              .sort(),
          );
        } catch (error) {
          const code = (error as NodeJS.ErrnoException).code;
          // Not found: the name exists no more, or has no instance now (a headless Service with no ready pod).
          if (code === "ENOTFOUND" || code === "ENODATA") known.set(source, []);
          else log.warn({ err: error, name: source.name }, "could not look up chat instances: keeping the last ones");
        }
      }),
    );
    publish();
  }
  await refresh();
  const timer = sources.some((s) => s.kind === "dns") ? setInterval(() => void refresh(), refreshMs) : undefined;
  timer?.unref();
  return {
    current: () => current,
    refresh,
    stop: () => clearInterval(timer),
  };
}
