// The consumer as an esbuild bundle, served by the fixture at /page/esbuild/. esbuild copies no
// assets for `new URL(…, import.meta.url)`: the .wasm is copied next to the bundle and the page
// names it, as esbuild's users do.
import { build } from "esbuild";
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";

const out = "dist/esbuild";
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
await build({ entryPoints: ["src/pods.js"], bundle: true, format: "esm", target: "es2022", outfile: `${out}/pods.js` });
const wasm = createRequire(import.meta.url).resolve("kubemux/kubemux_bg.wasm");
copyFileSync(wasm, `${out}/kubemux_bg.wasm`);
const page = readFileSync("pages/bundle.html", "utf8").replace("<!-- wasm -->", '<script>globalThis.KUBEMUX_WASM = "/page/esbuild/kubemux_bg.wasm";</script>');
writeFileSync(`${out}/pods.html`, page);
