// `kubemux/react`: one hook over the external-store contract of `Subscription`
// (`subscribe` / `getSnapshot`), for React 18 and later. React is a peer dependency: nothing of
// it is bundled here.
import { useCallback, useEffect, useState, useSyncExternalStore } from "react";

const EMPTY = Object.freeze([]);
const nothing = () => {};

/**
 * The live objects of a watch, re-rendering the component on every change. The watch starts
 * when the component mounts (or when `mux` or the request changes) and is closed when it
 * unmounts. Pass `null` as the request to watch nothing.
 */
export function useWatch(mux, request) {
  const key = request ? JSON.stringify([request.cluster, request.path, request.labelSelector ?? null, request.fieldSelector ?? null]) : null;
  const [subscription, setSubscription] = useState(null);
  useEffect(() => {
    if (!mux || key === null) return undefined;
    const watch = mux.watch(request, {});
    setSubscription(watch);
    return () => {
      setSubscription(null);
      watch.close();
    };
    // `key` stands for the request's contents: a new object with the same fields is the same watch.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [mux, key]);
  const subscribe = useCallback((listener) => (subscription ? subscription.subscribe(listener) : nothing), [subscription]);
  const getSnapshot = useCallback(() => (subscription ? subscription.getSnapshot() : EMPTY), [subscription]);
  return useSyncExternalStore(subscribe, getSnapshot);
}
