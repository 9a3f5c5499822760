// Bundles the tests (dist/test/), the vector writer and the TypeScript client driver (dist/scripts/) for Node; node:test runs
// the tests from there. Packages from node_modules stay external.
import { readdirSync } from "node:fs";

import { build } from "esbuild";

const common = { bundle: true, platform: "node", format: "esm", target: "node20", packages: "external", logLevel: "warning" };
const tests = readdirSync("packages/protocol/test").filter((f) => f.endsWith(".test.ts"));

await build({ ...common, entryPoints: tests.map((f) => `packages/protocol/test/${f}`), outdir: "dist/test" });
await build({ ...common, entryPoints: ["scripts/write-vectors.ts", "scripts/ts-client.ts"], outdir: "dist/scripts" });
// The browser test (started by crates/cli/tests/portal.rs against real validators).
await build({ ...common, entryPoints: ["e2e/walkthrough.test.ts", "e2e/roles.test.ts"], outdir: "dist/e2e" });
