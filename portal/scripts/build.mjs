// Bundles the tests (dist/test/) and the vector writer (dist/scripts/) for Node; node:test runs
// the tests from there. Packages from node_modules stay external.
import { readdirSync } from "node:fs";

import { build } from "esbuild";

const common = { bundle: true, platform: "node", format: "esm", target: "node20", packages: "external", logLevel: "warning" };
const tests = readdirSync("packages/protocol/test").filter((f) => f.endsWith(".test.ts"));

await build({ ...common, entryPoints: tests.map((f) => `packages/protocol/test/${f}`), outdir: "dist/test" });
await build({ ...common, entryPoints: ["scripts/write-vectors.ts"], outdir: "dist/scripts" });
