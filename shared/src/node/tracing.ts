import { context, propagation, type Span, SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { BatchSpanProcessor, NodeTracerProvider } from "@opentelemetry/sdk-trace-node";

/**
 * OpenTelemetry tracing (the official SDK), off unless an OTLP endpoint is given: then every REST request
 * and upgrade is a span, the gateway's hop to the chat instance carries the W3C `traceparent` header, and
 * listings-chat's PostgreSQL queries are child spans, so one trace runs gateway → chat → PostgreSQL. Spans
 * are sent in batches over OTLP/HTTP (`<endpoint>/v1/traces`). Off, the API's no-op tracer costs nothing.
 */
export interface TracingOptions {
  /** OTEL_EXPORTER_OTLP_ENDPOINT, e.g. http://otel-collector:4318; tracing is off without it. */
  endpoint?: string;
  /** OTEL_SERVICE_NAME: the `service.name` of every span. */
  serviceName: string;
}

export interface Tracing {
  /** Sends what is buffered and stops; called last when the service stops. */
  shutdown(): Promise<void>;
}

/** Starts tracing for this process when an endpoint is set (the provider, its context and propagator, global). */
export function startTracing({ endpoint, serviceName }: TracingOptions): Tracing | undefined {
  if (!endpoint) return undefined;
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ "service.name": serviceName }),
    spanProcessors: [
      new BatchSpanProcessor(new OTLPTraceExporter({ url: `${endpoint.replace(/\/+$/, "")}/v1/traces` })),
    ],
  });
  provider.register();
  return { shutdown: () => provider.shutdown() };
}

const tracer = () => trace.getTracer("listings-chat");

/**
 * Runs `work` in a span named `name`, a child of the span in `headers`' `traceparent` when there is one
 * (a request that came from the gateway) or of the active span; the span ends when `work` settles.
 */
export function inSpan<T>(
  name: string,
  options: {
    kind: SpanKind;
    attributes?: Record<string, string | number>;
    headers?: Record<string, string | undefined>;
  },
  work: (span: Span) => Promise<T>,
): Promise<T> {
  const parent = options.headers ? propagation.extract(context.active(), options.headers) : context.active();
  return tracer().startActiveSpan(
    name,
    { kind: options.kind, attributes: options.attributes },
    parent,
    async (span) => {
      try {
        return await work(span);
      } catch (error) {
        span.recordException(error as Error);
        span.setStatus({ code: SpanStatusCode.ERROR });
        throw error;
      } finally {
        span.end();
      }
    },
  );
}

/** A span that the caller ends (a query whose answer comes to a callback), a child of the active span. */
export function startChildSpan(name: string, attributes: Record<string, string | number>): Span {
  return tracer().startSpan(name, { kind: SpanKind.CLIENT, attributes }, context.active());
}

/** Writes the active span's `traceparent` into `headers` (the hop to the chat instance). */
export function injectTraceContext(headers: Record<string, unknown>): void {
  propagation.inject(context.active(), headers);
}

export { SpanKind };

/** A Node request's headers as one string each (the first of repeated ones), for `propagation.extract`. */
export function flatHeaders(req: {
  headers: Record<string, string | string[] | undefined>;
}): Record<string, string | undefined> {
  const flat: Record<string, string | undefined> = {};
  for (const [name, value] of Object.entries(req.headers)) flat[name] = Array.isArray(value) ? value[0] : value;
  return flat;
}
