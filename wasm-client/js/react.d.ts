import type { KubeObject, Mux, WatchRequest } from "./kubemux.js";

/**
 * The live objects of a watch, re-rendering the component on every change; the watch starts
 * on mount (or when `mux` or the request's fields change) and is closed on unmount. `null` as
 * the request watches nothing. The array (read it, never change it) stays the same until something changes.
 */
export function useWatch<T = KubeObject>(mux: Mux | null | undefined, request: WatchRequest | null): readonly T[];
