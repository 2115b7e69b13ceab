// Where the proxy is. The app is normally served by the proxy itself (`kubemux-proxy --static`),
// so everything is same-origin. For development, `?proxy=http://127.0.0.1:8080` points the app
// at another proxy (which must allow this page's origin with `--allowed-origin`).

export interface AppConfig {
  /** Base URL for HTTP endpoints (`/clusters`, pass-through, exec): no trailing slash. */
  httpBase: string;
  /** The multiplexer's WebSocket URL. */
  muxUrl: string;
}

export function readConfig(location: Location = window.location): AppConfig {
  const params = new URLSearchParams(location.search);
  const httpBase = (params.get("proxy") ?? location.origin).replace(/\/+$/, "");
  const muxUrl = params.get("mux") ?? `${httpBase.replace(/^http/, "ws")}/mux`;
  return { httpBase, muxUrl };
}
