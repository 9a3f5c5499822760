// Builds the portal as the server embeds it (crates/portal/assets/): the script and the style,
// minified, and the page that loads them pinned by Subresource Integrity. The output is
// deterministic: `npm run check:app` builds it again and fails when the committed files differ
// (a stale build), and crates/portal prints the script's SHA-256 at start.
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";

import { build } from "esbuild";

const out = process.argv[2] ?? "../crates/portal/assets";
mkdirSync(out, { recursive: true });
const bundled = await build({
  entryPoints: ["packages/app/src/main.ts"],
  bundle: true,
  platform: "browser",
  format: "iife",
  target: "chrome120",
  minify: true,
  legalComments: "none",
  write: false,
  logLevel: "warning",
});
const script = bundled.outputFiles[0].contents;
const style = readFileSync("packages/app/src/app.css");
const sri = (bytes) => `sha256-${createHash("sha256").update(bytes).digest("base64")}`;
const page = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>medledger</title>
<link rel="stylesheet" href="/app.css" integrity="${sri(style)}">
<script src="/app.js" integrity="${sri(script)}" defer></script>
</head>
<body>
<header><h1>medledger</h1><div id="who"></div></header>
<div id="status" role="status" aria-live="polite"></div>
<main id="main" tabindex="-1"><p>Loading…</p></main>
<noscript>The portal decrypts records on your device and needs JavaScript.</noscript>
</body>
</html>
`;
writeFileSync(`${out}/app.js`, script);
writeFileSync(`${out}/app.css`, style);
writeFileSync(`${out}/index.html`, page);
console.log(`app.js ${script.length} bytes, sha256 ${createHash("sha256").update(script).digest("hex")}`);
