// Builds the console and the widget into ../fhir_sched/static (or the folder given), the same
// bytes from the same sources and lock file: the server serves what this writes, and a test
// rebuilds it and compares.
//   node build.mjs [OUT]
import { rmSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import * as esbuild from "esbuild";

const out = resolve(process.argv[2] || "../fhir_sched/static");
rmSync(join(out, "console"), { recursive: true, force: true });
rmSync(join(out, "widget"), { recursive: true, force: true });
mkdirSync(join(out, "console", "assets"), { recursive: true });

const common = { bundle: true, minify: true, legalComments: "eof", logLevel: "warning",
  charset: "utf8", target: "es2022", platform: "browser" };

const app = await esbuild.build({
  ...common, entryPoints: { console: "src/main.js", launch: "src/launch.js",
    style: "src/console.css" },
  format: "esm", splitting: true, outdir: join(out, "console", "assets"),
  entryNames: "[name]-[hash]", chunkNames: "chunk-[hash]", metafile: true,
});
const names = {};
for (const [file, meta] of Object.entries(app.metafile.outputs)) {
  if (meta.entryPoint) names[meta.entryPoint] = basename(file);
}
for (const page of ["index.html", "launch.html"]) {
  const text = readFileSync(join("src", page), "utf8")
    .replaceAll("%JS%", names["src/main.js"]).replaceAll("%LAUNCH%", names["src/launch.js"])
    .replaceAll("%CSS%", names["src/console.css"]);
  writeFileSync(join(out, "console", page), text);
}
await esbuild.build({
  ...common, entryPoints: ["src/widget.js"], format: "iife",
  outfile: join(out, "widget", "booking.js"),
});
console.log(`built ${Object.keys(app.metafile.outputs).length} console files and the widget`);
