import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: [
      "shared/**/*.test.ts",
      "packages/**/*.test.{ts,tsx}",
      "services/**/*.test.ts",
      "infra/**/*.test.ts",
      "bench/**/*.test.ts",
      "docs/**/*.test.ts",
    ],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: "forks",
  },
});
