/**
 * One runtime everywhere: package.json pins Node (`devDependencies.node`, the registry's build of Node that
 * `npm test`, `npm start` and the benchmarks run on, whatever Node the machine has), and the image, .nvmrc and
 * the Kubernetes pod templates name the same version. This test itself must be running on it: a CI that fell
 * back to the machine's older Node fails here.
 */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";

const root = fileURLToPath(new URL("../../", import.meta.url));
const read = (path: string) => readFileSync(`${root}${path}`, "utf8");

const manifest = JSON.parse(read("package.json")) as {
  engines: { node: string };
  devDependencies: Record<string, string>;
};
const pinned = manifest.devDependencies.node ?? "";

describe("the pinned runtime", () => {
  it("is one exact version, which engines accepts", () => {
    expect(pinned).toMatch(/^\d+\.\d+\.\d+$/);
    const [major] = pinned.split(".");
    // `^x.y.z`: the same major, this version or newer.
    expect(manifest.engines.node).toBe(`^${pinned}`);
    expect(major).toBe("26");
  });

  it("runs this test", () => {
    expect(process.version).toBe(`v${pinned}`);
    expect(process.versions.node).toBe(pinned);
  });

  it("is the image's base", () => {
    const image = /^ARG NODE_IMAGE=node:([^@\s-]+)-trixie-slim(@sha256:[0-9a-f]{64})?$/m.exec(read("infra/Dockerfile"));
    expect(image?.[1]).toBe(pinned);
  });

  it("is .nvmrc's, for nvm and fnm users", () => {
    expect(read(".nvmrc").trim()).toBe(pinned);
  });

  it("is named in every Kubernetes pod template", () => {
    const templates: Array<{ name: string; version: unknown }> = [];
    for (const file of ["infra/k8s/base/gateway.yaml", "infra/k8s/base/listings-chat.yaml"]) {
      for (const document of parseAllDocuments(read(file))) {
        const resource = document.toJS() as {
          kind?: string;
          metadata?: { name?: string };
          spec?: { template?: { metadata?: { annotations?: Record<string, string> } } };
        };
        if (resource?.kind !== "Deployment") continue;
        templates.push({
          name: resource.metadata?.name ?? "",
          version: resource.spec?.template?.metadata?.annotations?.["listings-chat/node-version"],
        });
      }
    }
    expect(templates.map((t) => t.name).sort()).toEqual(["gateway", "listings-chat"]);
    for (const template of templates) expect(template).toEqual({ name: template.name, version: pinned });
  });
});
