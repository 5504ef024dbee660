import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    // convex-test's documented environment: close to the Convex runtime.
    // A suite that needs Node APIs opts out per file with
    // `// @vitest-environment node`.
    environment: "edge-runtime",
    include: ["tests/**/*.test.ts"],
    server: { deps: { inline: ["convex-test"] } },
  },
});
