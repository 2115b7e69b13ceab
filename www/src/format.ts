// How Kubernetes objects read in a table: the columns kubectl users expect.

import type { KubeObject } from "kubemux";

interface ContainerStatus {
  ready?: boolean;
  restartCount?: number;
  state?: { waiting?: { reason?: string }; terminated?: { reason?: string; exitCode?: number }; running?: unknown };
}

export interface Pod extends KubeObject {
  spec?: { nodeName?: string; containers?: { name: string }[] };
  status?: { phase?: string; reason?: string; containerStatuses?: ContainerStatus[] };
}

export interface KubeEvent extends KubeObject {
  type?: string;
  reason?: string;
  message?: string;
  count?: number;
  lastTimestamp?: string | null;
  eventTime?: string | null;
  firstTimestamp?: string | null;
  involvedObject?: { kind?: string; name?: string; namespace?: string };
}

export function podReady(pod: Pod): string {
  const statuses = pod.status?.containerStatuses ?? [];
  const total = statuses.length || pod.spec?.containers?.length || 0;
  return `${statuses.filter((c) => c.ready).length}/${total}`;
}

/** The STATUS column, computed the way kubectl does it (reason of the first non-running container). */
export function podStatus(pod: Pod): string {
  if (pod.metadata.deletionTimestamp) return "Terminating";
  let status = pod.status?.reason ?? pod.status?.phase ?? "Unknown";
  for (const container of pod.status?.containerStatuses ?? []) {
    const waiting = container.state?.waiting?.reason;
    const terminated = container.state?.terminated;
    if (waiting) status = waiting;
    else if (terminated) status = terminated.reason ?? `ExitCode:${terminated.exitCode ?? "?"}`;
  }
  return status;
}

export function podRestarts(pod: Pod): number {
  return (pod.status?.containerStatuses ?? []).reduce((sum, c) => sum + (c.restartCount ?? 0), 0);
}

/** Tone of a status for colouring: good, warn or bad. */
export function statusTone(status: string): "good" | "warn" | "bad" {
  if (status === "Running" || status === "Succeeded" || status === "Completed") return "good";
  if (/Pending|ContainerCreating|Terminating|PodInitializing|Unknown/.test(status)) return "warn";
  return "bad";
}

/** `42s`, `5m`, `3h`, `2d`: kubectl's AGE, from an RFC 3339 timestamp. */
export function age(timestamp: unknown, now = Date.now()): string {
  if (typeof timestamp !== "string") return "–";
  const seconds = Math.max(0, Math.floor((now - Date.parse(timestamp)) / 1000));
  if (Number.isNaN(seconds)) return "–";
  if (seconds < 120) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 120) return `${minutes}m`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours}h`;
  return `${Math.floor(hours / 24)}d`;
}

/** `namespace/name`: the key of a namespaced object. */
export function objectKey(object: KubeObject): string {
  return `${object.metadata.namespace ?? ""}/${object.metadata.name}`;
}

/** Compares resourceVersions: decimal strings of any length. */
export function compareVersions(a = "", b = ""): number {
  return a.length - b.length || (a < b ? -1 : a > b ? 1 : 0);
}

export function eventTime(event: KubeEvent): string | undefined {
  return event.lastTimestamp ?? event.eventTime ?? event.firstTimestamp ?? (event.metadata.creationTimestamp as string | undefined);
}
