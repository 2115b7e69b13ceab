import { fileURLToPath } from "node:url";
import { copyFileSync, mkdirSync } from "node:fs";

const dist = fileURLToPath(new URL("dist/webpack/", import.meta.url));

// The consumer as a webpack 5 bundle, served by the fixture at /page/webpack/. webpack turns the
// package's `new URL("kubemux_bg.wasm", import.meta.url)` into an asset of its own.
export default {
  mode: "production",
  entry: "./src/pods.js",
  experiments: { topLevelAwait: true },
  output: { path: dist, filename: "pods.js", publicPath: "auto", clean: true },
  plugins: [
    {
      apply(compiler) {
        compiler.hooks.afterEmit.tap("page", () => {
          mkdirSync(dist, { recursive: true });
          copyFileSync(fileURLToPath(new URL("pages/bundle.html", import.meta.url)), `${dist}pods.html`);
        });
      },
    },
  ],
};
