/**
 * Checks an HTTP answer against the OpenAPI document (services/gateway/src/docs/openapi.ts): its status must
 * be one the operation documents, its JSON body must validate against the schema documented for that status
 * (JSON Schema 2020-12, as OpenAPI 3.1 uses, with Ajv), and an error's `code` must be named in backticks in
 * that status's description (so a new refusal cannot ship undocumented).
 *
 * Ajv is a dependency of @apidevtools/swagger-parser (the gateway's devDependency), not declared by the
 * gateway itself.
 */
import { Ajv2020, type ValidateFunction } from "ajv/dist/2020.js";

type Json = Record<string, any>;

/** RFC 3339 date-time, as zod's `z.iso.datetime()` (documented as `format: date-time`) produces it. */
const ISO_DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;

/** `#/components/schemas/X` → `#/$defs/X`, so that the component schemas travel as `$defs` of one root. */
function rebased(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(rebased);
  if (node === null || typeof node !== "object") return node;
  const out: Json = {};
  for (const [key, value] of Object.entries(node)) {
    out[key] =
      key === "$ref" && typeof value === "string"
        ? value.replace(/^#\/components\/schemas\//, "#/$defs/")
        : rebased(value);
  }
  return out;
}

export interface AnswerCheck {
  /** What is wrong with the answer, as sentences; empty when the document allows it. */
  problems(path: string, method: string, status: number, body: unknown): string[];
}

export function answerChecker(document: Json): AnswerCheck {
  const ajv = new Ajv2020({ strict: false, allErrors: true });
  ajv.addFormat("date-time", {
    type: "string",
    validate: (s: string) => ISO_DATE_TIME.test(s) && !Number.isNaN(Date.parse(s)),
  });
  const defs = rebased(document.components?.schemas ?? {}) as Json;
  const compiled = new Map<string, ValidateFunction>();

  return {
    problems(path, method, status, body) {
      const operation = document.paths?.[path]?.[method.toLowerCase()] as Json | undefined;
      if (!operation) return [`${method.toUpperCase()} ${path} is not in the document`];
      const where = `${method.toUpperCase()} ${path} ${status}`;
      const response = operation.responses?.[String(status)] as Json | undefined;
      if (!response) {
        return [`${where}: status not documented (documented: ${Object.keys(operation.responses ?? {}).join(", ")})`];
      }
      const schema = response.content?.["application/json"]?.schema as Json | undefined;
      if (!schema) {
        return body === undefined
          ? []
          : [`${where}: the document says no body, the answer has ${JSON.stringify(body)}`];
      }
      if (body === undefined) return [`${where}: the document says a JSON body, the answer has none`];
      const key = `${method} ${path} ${status}`;
      const validate = compiled.get(key) ?? ajv.compile({ ...(rebased(schema) as Json), $defs: defs });
      compiled.set(key, validate);
      const problems: string[] = [];
      if (!validate(body)) {
        for (const e of validate.errors ?? []) problems.push(`${where}: ${e.instancePath || "/"} ${e.message}`);
      }
      const code = (body as Json | null)?.error?.code;
      if (status >= 400 && typeof code === "string" && !String(response.description).includes(`\`${code}\``)) {
        problems.push(`${where}: the code \`${code}\` is not named in "${response.description}"`);
      }
      return problems;
    },
  };
}
