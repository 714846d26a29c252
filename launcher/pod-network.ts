/**
 * The pod-network facts `planDomain` needs to decide what passt forwards (domain-plan.ts
 * `passtForwards`): the open-files limit passt inherits, which IP families have a default route, and
 * the ephemeral port range. Read from /proc of the launcher's own network namespace (the pod's);
 * the parsers are pure and exported for the tests.
 */

import { access, constants, readFile } from 'node:fs/promises';
import type { PodNetworkFacts } from './domain/domain-plan.js';
import { PodNetworkBackend, type PortRange } from '../src/contract/launch-plan.js';

/** Where libvirt 9.0 looks for passt (its build-time path in Debian 12). */
export const PASST_BINARY = '/usr/bin/passt';

/** Linux's defaults, used when /proc does not say. */
const DEFAULT_EPHEMERAL: PortRange = { start: 32768, end: 60999 };
const DEFAULT_OPEN_FILES = 1024;

/** The hard "Max open files" of /proc/self/limits ("unlimited" counts as 2^20, the kernel's nr_open default). */
export function parseOpenFilesLimit(limits: string): number | undefined {
  const m = /^Max open files\s+(\S+)\s+(\S+)/m.exec(limits);
  if (!m) return undefined;
  if (m[2] === 'unlimited') return 1 << 20;
  const n = Number(m[2]);
  return Number.isSafeInteger(n) && n > 0 ? n : undefined;
}

/** `net.ipv4.ip_local_port_range` ("32768\t60999"). */
export function parsePortRange(text: string): PortRange | undefined {
  const m = /^\s*(\d+)\s+(\d+)\s*$/.exec(text);
  if (!m) return undefined;
  const start = Number(m[1]);
  const end = Number(m[2]);
  return start >= 1 && start <= end && end <= 65535 ? { start, end } : undefined;
}

/** /proc/net/route has an IPv4 default route (destination and mask 0) on an interface other than lo. */
export function hasIpv4DefaultRoute(route: string): boolean {
  return route
    .split('\n')
    .slice(1)
    .map((l) => l.trim().split(/\s+/))
    .some((f) => f.length >= 8 && f[0] !== 'lo' && f[1] === '00000000' && f[7] === '00000000');
}

/** /proc/net/ipv6_route has ::/0 on an interface other than lo (lo carries the unreachable default). */
export function hasIpv6DefaultRoute(route: string): boolean {
  return route
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .some((f) => f.length >= 10 && /^0{32}$/.test(f[0]!) && f[1] === '00' && f[9] !== 'lo');
}

async function text(path: string): Promise<string> {
  return readFile(path, 'utf8').catch(() => '');
}

/** Probes this process's network namespace and limits; passt's sockets are to go into `socketDir`. */
export async function probePodNetwork(backend: PodNetworkBackend, socketDir: string): Promise<PodNetworkFacts> {
  const [limits, range, route4, route6] = await Promise.all([
    text('/proc/self/limits'),
    text('/proc/sys/net/ipv4/ip_local_port_range'),
    text('/proc/net/route'),
    text('/proc/net/ipv6_route'),
  ]);
  const families = (hasIpv4DefaultRoute(route4) ? 1 : 0) + (hasIpv6DefaultRoute(route6) ? 1 : 0);
  return {
    backend,
    openFilesLimit: parseOpenFilesLimit(limits) ?? DEFAULT_OPEN_FILES,
    ipFamilies: families,
    ephemeralPorts: parsePortRange(range) ?? DEFAULT_EPHEMERAL,
    socketDir,
  };
}

/** Whether passt can be run (libvirt starts it; without it the domain would fail to start). */
export async function passtInstalled(path: string = PASST_BINARY): Promise<boolean> {
  return access(path, constants.X_OK).then(
    () => true,
    () => false,
  );
}
