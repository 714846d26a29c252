/**
 * Who is asking: the kube-apiserver's front proxy (request-header) authentication, as every
 * aggregated API server does it (k8s.io/apiserver `requestheader`). The kube-apiserver authenticates
 * the user, then calls the aggregated server with its proxy client certificate and the identity in
 * headers (`X-Remote-User`, `X-Remote-Group`, `X-Remote-Extra-<key>`). Those headers mean something
 * only on a connection whose client certificate chains to the request-header CA published in
 * ConfigMap kube-system/extension-apiserver-authentication (and whose common name is in its allowed
 * names, when the list is not empty): on any other connection they are ignored and the caller is
 * anonymous. The chain itself is checked by TLS (the server's `ca` is that CA and nothing else);
 * this module decides from the outcome.
 */

import type { IncomingHttpHeaders } from 'node:http';

export const EXTENSION_AUTH_CONFIGMAP = { namespace: 'kube-system', name: 'extension-apiserver-authentication' } as const;

/** The ConfigMap's keys (values of the list keys are JSON arrays, as the kube-apiserver writes them). */
export const ExtensionAuthKey = {
  ClientCa: 'requestheader-client-ca-file',
  AllowedNames: 'requestheader-allowed-names',
  UsernameHeaders: 'requestheader-username-headers',
  GroupHeaders: 'requestheader-group-headers',
  ExtraHeaderPrefixes: 'requestheader-extra-headers-prefix',
} as const;

export interface RequestHeaderConfig {
  /** PEM bundle the front proxy's client certificate must chain to. */
  readonly clientCa: string;
  readonly allowedNames: readonly string[];
  readonly usernameHeaders: readonly string[];
  readonly groupHeaders: readonly string[];
  readonly extraHeaderPrefixes: readonly string[];
}

export interface User {
  readonly name: string;
  /** The user's uid, where the authenticator knows one (admission userInfo carries it). */
  readonly uid?: string;
  readonly groups: readonly string[];
  readonly extra: Readonly<Record<string, readonly string[]>>;
}

export type Identity = { readonly kind: 'user'; readonly user: User } | { readonly kind: 'anonymous'; readonly why: string };

function stringList(text: string | undefined, key: string): string[] {
  if (text === undefined || text.trim() === '') return [];
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new Error(`${EXTENSION_AUTH_CONFIGMAP.namespace}/${EXTENSION_AUTH_CONFIGMAP.name}: ${key} is not a JSON list`);
  }
  if (!Array.isArray(value) || !value.every((v): v is string => typeof v === 'string')) {
    throw new Error(`${EXTENSION_AUTH_CONFIGMAP.namespace}/${EXTENSION_AUTH_CONFIGMAP.name}: ${key} is not a list of strings`);
  }
  return value;
}

/**
 * Pure: the request-header configuration from the ConfigMap's data, or undefined when the
 * kube-apiserver publishes none (it was started without --requestheader-client-ca-file): then no
 * caller can be trusted and every request is anonymous.
 */
export function parseExtensionAuth(data: Readonly<Record<string, string>> | undefined): RequestHeaderConfig | undefined {
  const clientCa = data?.[ExtensionAuthKey.ClientCa];
  if (data === undefined || clientCa === undefined || !clientCa.includes('BEGIN CERTIFICATE')) return undefined;
  const usernameHeaders = stringList(data[ExtensionAuthKey.UsernameHeaders], ExtensionAuthKey.UsernameHeaders);
  if (usernameHeaders.length === 0) return undefined;
  return {
    clientCa,
    allowedNames: stringList(data[ExtensionAuthKey.AllowedNames], ExtensionAuthKey.AllowedNames),
    usernameHeaders,
    groupHeaders: stringList(data[ExtensionAuthKey.GroupHeaders], ExtensionAuthKey.GroupHeaders),
    extraHeaderPrefixes: stringList(data[ExtensionAuthKey.ExtraHeaderPrefixes], ExtensionAuthKey.ExtraHeaderPrefixes),
  };
}

/** What TLS established about the caller's certificate. */
export interface PeerCertificate {
  /** The certificate chains to the request-header CA and is valid now (Node's `socket.authorized`). */
  readonly verified: boolean;
  /** It chains to the webhook client CA (set only when one is configured). */
  readonly webhookClient?: boolean;
  readonly commonName?: string;
  /** Its extended key usages (OIDs), undefined when the extension is absent. */
  readonly extKeyUsage?: readonly string[];
}

const CLIENT_AUTH_OID = '1.3.6.1.5.5.7.3.2';
const ANY_EKU_OID = '2.5.29.37.0';

/** Node's `headersDistinct`: each header name (lower case) with all its values. */
export type DistinctHeaders = Readonly<Record<string, readonly string[] | undefined>>;

/** Node's `IncomingHttpHeaders` as distinct lists (for callers that only have the joined form). */
export function distinct(headers: IncomingHttpHeaders): DistinctHeaders {
  return Object.fromEntries(Object.entries(headers).map(([k, v]) => [k, v === undefined ? undefined : Array.isArray(v) ? v : [v]]));
}

function unescapeExtraKey(key: string): string {
  try {
    return decodeURIComponent(key).toLowerCase();
  } catch {
    return key.toLowerCase();
  }
}

/** Pure: the identity of a request from its TLS peer and headers. */
export function identify(config: RequestHeaderConfig | undefined, peer: PeerCertificate | undefined, headers: DistinctHeaders): Identity {
  if (config === undefined) return { kind: 'anonymous', why: 'the cluster publishes no request-header CA' };
  if (peer === undefined || !peer.verified) return { kind: 'anonymous', why: 'no client certificate from the request-header CA' };
  if (peer.extKeyUsage !== undefined && !peer.extKeyUsage.includes(CLIENT_AUTH_OID) && !peer.extKeyUsage.includes(ANY_EKU_OID)) {
    return { kind: 'anonymous', why: 'the client certificate is not for client authentication' };
  }
  if (config.allowedNames.length > 0 && !config.allowedNames.includes(peer.commonName ?? '')) {
    return { kind: 'anonymous', why: `the client certificate's common name ${JSON.stringify(peer.commonName ?? '')} is not an allowed request-header name` };
  }
  const values = (name: string): readonly string[] => headers[name.toLowerCase()] ?? [];
  const name = config.usernameHeaders.map((h) => values(h).find((v) => v !== '')).find((v) => v !== undefined);
  if (name === undefined) return { kind: 'anonymous', why: 'the front proxy named no user' };
  const groups = config.groupHeaders.flatMap((h) => values(h));
  const extra: Record<string, string[]> = {};
  for (const prefix of config.extraHeaderPrefixes.map((p) => p.toLowerCase())) {
    for (const [header, list] of Object.entries(headers)) {
      if (!header.startsWith(prefix) || header.length === prefix.length || list === undefined) continue;
      (extra[unescapeExtraKey(header.slice(prefix.length))] ??= []).push(...list);
    }
  }
  return { kind: 'user', user: { name, groups, extra } };
}

/** Who may call the admission webhook: a client certificate from `ca` with one of `names` (any, when empty). */
export interface WebhookClientConfig {
  readonly ca: string;
  readonly names: readonly string[];
}

/**
 * Pure: whether a webhook call comes from the kube-apiserver. Without a configured webhook client
 * CA every caller is taken (the deployment must keep the port to the kube-apiserver; ADR 0014).
 */
export function webhookCallerProblem(config: WebhookClientConfig | undefined, peer: PeerCertificate | undefined): string | undefined {
  if (config === undefined) return undefined;
  if (peer === undefined || peer.webhookClient !== true) return 'no client certificate from the webhook client CA';
  if (peer.extKeyUsage !== undefined && !peer.extKeyUsage.includes(CLIENT_AUTH_OID) && !peer.extKeyUsage.includes(ANY_EKU_OID)) return 'the client certificate is not for client authentication';
  if (config.names.length > 0 && !config.names.includes(peer.commonName ?? '')) return `the client certificate's common name ${JSON.stringify(peer.commonName ?? '')} is not an allowed webhook client`;
  return undefined;
}
