import { defineConfig } from "vite";

// The consumer as a Vite app, served by the fixture at /page/vite/.
export default defineConfig({
  root: "pages/vite",
  base: "/page/vite/",
  server: { fs: { allow: [".", "../../wasm-client/pkg"] } },
  // The package loads its .wasm with `new URL(…, import.meta.url)`; pre-bundling would move the JS away from the file.
  optimizeDeps: { exclude: ["kubemux"] },
  build: { target: "es2022", outDir: "../../dist/vite", emptyOutDir: true, rollupOptions: { input: "pages/vite/pods.html" } },
});
