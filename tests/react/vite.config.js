import { defineConfig } from "vite";

// Served by the test fixture under /page/ (tests/src/bin/kubemux-fixture.rs, `--pages dist`).
export default defineConfig({
  base: "/page/",
  // `kubemux` is a `file:` dependency (a symlink outside this folder), and loads its .wasm with
  // `new URL(…, import.meta.url)`: pre-bundling would move the JS away from the file.
  server: { fs: { allow: [".", "../../wasm-client/pkg"] } },
  optimizeDeps: { exclude: ["kubemux"] },
  // A linked package resolves its peer dependency from its own (real) folder, which has none:
  // React comes from this app, as it would for an installed copy.
  resolve: { dedupe: ["react", "react-dom"] },
  build: { target: "es2022", outDir: "dist", emptyOutDir: true, rollupOptions: { input: "react.html" } },
});
