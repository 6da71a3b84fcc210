// Bundle js/src/panel.js (+ render.js) into ipybgfetch/static/panel.js and copy the CSS.
// The output is committed so `pip install .` needs no node. `node build.mjs --check`
// fails if the committed output is stale (for CI).
import { build } from "esbuild";
import { readFileSync, writeFileSync, mkdirSync, existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const staticDir = join(here, "..", "ipybgfetch", "static");
const check = process.argv.includes("--check");

const banner = "// Built from js/src by `npm run build` (esbuild). Do not edit; edit js/src instead.";
const result = await build({
  entryPoints: [join(here, "src", "panel.js")],
  bundle: true,
  format: "esm",
  target: ["es2020"],
  minify: false,
  legalComments: "none",
  banner: { js: banner },
  write: false,
  logLevel: "warning",
});
const outputs = {
  "panel.js": result.outputFiles[0].text,
  "panel.css": `/* Copied from js/src/panel.css by \`npm run build\`. Edit js/src/panel.css instead. */\n${readFileSync(join(here, "src", "panel.css"), "utf8")}`,
};

let stale = [];
mkdirSync(staticDir, { recursive: true });
for (const [name, text] of Object.entries(outputs)) {
  const path = join(staticDir, name);
  const current = existsSync(path) ? readFileSync(path, "utf8") : null;
  if (current === text) continue;
  if (check) stale.push(name);
  else {
    writeFileSync(path, text);
    console.log(`wrote ${path}`);
  }
}
if (check && stale.length) {
  console.error(`ipybgfetch/static is stale (${stale.join(", ")}): run \`npm run build\` in js/`);
  process.exit(1);
}
