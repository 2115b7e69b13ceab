import { defineConfig } from "vite";

// In development the app talks to a kubemux proxy through the dev server, so the page, /mux and
// /clusters share one origin just as they do when the proxy serves the built app (`--static`).
// Start the proxy with `--allowed-origin http://127.0.0.1:5173` (the WebSocket keeps the page's
// Origin) and point the dev server at it with KUBEMUX_PROXY.
const proxy = process.env.KUBEMUX_PROXY ?? "http://127.0.0.1:8080";

export default defineConfig({
  server: {
    host: "127.0.0.1",
    port: 5173,
    strictPort: true,
    // `kubemux` is a `file:` dependency: a symlink to ../wasm-client/pkg, outside this folder.
    fs: { allow: [".", "../wasm-client/pkg"] },
    proxy: {
      "/mux": { target: proxy.replace(/^http/, "ws"), ws: true },
      "/clusters": { target: proxy },
    },
  },
  // The package loads its .wasm with `new URL(…, import.meta.url)`; pre-bundling would move
  // the JS away from the file.
  optimizeDeps: { exclude: ["kubemux"] },
  build: { target: "es2022", outDir: "dist", emptyOutDir: true, chunkSizeWarningLimit: 600 },
});
