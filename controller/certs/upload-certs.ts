/**
 * The upload path's certificates, kept as Secrets in Ferry's namespace (docs/adr/0010, "The
 * controller part"): three CAs and the upload proxy's two leaves. `ensure()` reads each Secret,
 * applies the decisions of rotation.ts and writes back only what changed (optimistic: a replace
 * at the resourceVersion read; a conflict fails this round and the next one starts over). The
 * upload controller calls `serverCertificate` for each upload pod it starts.
 *
 *   ferry-upload-server-ca    signs the upload servers' certificates; its bundle is what the proxy trusts
 *   ferry-upload-client-ca    signs the proxy's client certificate; its bundle is what upload servers trust
 *   ferry-uploadproxy-ca      signs the proxy's serving certificate; its bundle is for clients of the proxy
 *   ferry-uploadproxy-client  the proxy's client certificate (CN client.upload-server.cdi.kubevirt.io) + ca.crt = server CA bundle
 *   ferry-uploadproxy-tls     the proxy's serving certificate (its Service's DNS names) + ca.crt = proxy CA bundle
 *
 * and one ConfigMap, the proxy CA's bundle alone (no key), written in the same round as the CA:
 *
 *   ferry-uploadproxy-ca      ca.crt = proxy CA bundle; every authenticated user may read it (manifests/rbac-upload-users.yaml)
 */

import type { CoreV1Api, V1ConfigMap, V1Secret } from '@kubernetes/client-node';
import type { Logger } from '../../src/logging.js';
import { UPLOAD_PROXY_CLIENT_NAME, UploadProxyCaBundle } from '../../src/contract/upload-api.js';
import { CertUsage, type KeyAndCert } from '../../src/pki/x509.js';
import { kubeCall, kubeGet } from '../runtime/errors.js';
import {
  applyCaDecision,
  bundleOf,
  type CaState,
  caSecretData,
  caStateFrom,
  CertKey,
  type CertSettings,
  decideCa,
  issueLeaf,
  leafNeedsIssue,
  signingCa,
} from './rotation.js';

export const UploadSecret = {
  ServerCa: 'ferry-upload-server-ca',
  ClientCa: 'ferry-upload-client-ca',
  ProxyCa: UploadProxyCaBundle.secret,
  ProxyClient: 'ferry-uploadproxy-client',
  ProxyServing: 'ferry-uploadproxy-tls',
} as const;

/** The upload proxy's Service (manifests/uploadproxy.yaml); its serving certificate names it. */
export const UPLOAD_PROXY_SERVICE = 'ferry-uploadproxy';

const CA_SUBJECTS: Readonly<Record<string, string>> = {
  [UploadSecret.ServerCa]: 'ferry-upload-server-ca',
  [UploadSecret.ClientCa]: 'ferry-upload-client-ca',
  [UploadSecret.ProxyCa]: 'ferry-uploadproxy-ca',
};

export const CERT_LABEL = 'ferry.dev/certificate';

/** A Service's DNS names, short to fully qualified. */
export function serviceHosts(service: string, namespace: string): string[] {
  return [service, `${service}.${namespace}`, `${service}.${namespace}.svc`, `${service}.${namespace}.svc.cluster.local`];
}

const decode = (secret: V1Secret | undefined): Record<string, string> =>
  Object.fromEntries(Object.entries(secret?.data ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64').toString('utf8')]));
const encode = (data: Readonly<Record<string, string>>): Record<string, string> => Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v).toString('base64')]));
const same = (a: Readonly<Record<string, string>>, b: Readonly<Record<string, string>>): boolean =>
  Object.keys(a).length === Object.keys(b).length && Object.entries(a).every(([k, v]) => b[k] === v);

/** What an upload pod is given: its key and certificate and the CA bundle its clients must chain to. */
export interface ServerCertificate extends KeyAndCert {
  readonly clientCaBundle: string;
}

/** What a clone source pod is given: its client key and certificate, and the CA bundle its server must chain to. */
export interface ClientCertificate extends KeyAndCert {
  readonly serverCaBundle: string;
}

export class UploadCertificates {
  private cas = new Map<string, CaState>();

  constructor(
    private readonly core: CoreV1Api,
    private readonly namespace: string,
    private readonly settings: CertSettings,
    private readonly logger: Logger,
    private readonly now: () => Date = () => new Date(),
  ) {}

  /** One round: every CA and the proxy's leaves as they should be now. */
  async ensure(): Promise<void> {
    const now = this.now();
    for (const name of [UploadSecret.ServerCa, UploadSecret.ClientCa, UploadSecret.ProxyCa]) {
      const secret = await this.get(name);
      const state = caStateFrom(decode(secret));
      const decision = decideCa(state, now);
      const next = applyCaDecision(state, decision, { commonName: CA_SUBJECTS[name] ?? name, organizations: ['ferry'] }, now, this.settings);
      await this.write(name, secret, caSecretData(next, now), 'ca');
      if (decision !== 'keep') this.logger.info({ secret: `${this.namespace}/${name}`, decision }, 'upload CA updated');
      this.cas.set(name, next);
    }
    await this.publishProxyCa(bundleOf(this.ca(UploadSecret.ProxyCa), now));
    await this.ensureLeaf(UploadSecret.ProxyClient, UploadSecret.ClientCa, UploadSecret.ServerCa, { commonName: UPLOAD_PROXY_CLIENT_NAME, usage: CertUsage.Client }, now);
    await this.ensureLeaf(UploadSecret.ProxyServing, UploadSecret.ProxyCa, UploadSecret.ProxyCa, { commonName: UPLOAD_PROXY_SERVICE, usage: CertUsage.Server, hosts: serviceHosts(UPLOAD_PROXY_SERVICE, this.namespace) }, now);
  }

  /** A new certificate for an upload server reached at `hosts` (needs one `ensure()` before). */
  serverCertificate(hosts: readonly string[], commonName: string): ServerCertificate {
    const now = this.now();
    const server = this.ca(UploadSecret.ServerCa);
    const client = this.ca(UploadSecret.ClientCa);
    const leaf = issueLeaf(signingCa(server, now, this.settings), { commonName, usage: CertUsage.Server, hosts }, now, this.settings);
    return { ...leaf, clientCaBundle: bundleOf(client, now) };
  }

  /**
   * A client certificate for one clone source (CN = the clone's client name, which its target
   * pins), from the upload client CA, with the server CA bundle it must trust (needs one `ensure()`).
   */
  clientCertificate(commonName: string): ClientCertificate {
    const now = this.now();
    const leaf = issueLeaf(signingCa(this.ca(UploadSecret.ClientCa), now, this.settings), { commonName, usage: CertUsage.Client }, now, this.settings);
    return { ...leaf, serverCaBundle: bundleOf(this.ca(UploadSecret.ServerCa), now) };
  }

  get ready(): boolean {
    return this.cas.size === 3;
  }

  private ca(name: string): CaState {
    const state = this.cas.get(name);
    if (!state) throw new Error(`the upload CA ${this.namespace}/${name} is not loaded yet`);
    return state;
  }

  private async ensureLeaf(name: string, caName: string, trustName: string, request: Parameters<typeof issueLeaf>[1], now: Date): Promise<void> {
    const secret = await this.get(name);
    const data = decode(secret);
    const signer = signingCa(this.ca(caName), now, this.settings);
    const trust = bundleOf(this.ca(trustName), now);
    const key = data[CertKey.Key];
    const cert = data[CertKey.Cert];
    const leaf: KeyAndCert | undefined = key && cert ? { key, cert } : undefined;
    const next = leaf && !leafNeedsIssue(leaf, signer, now) ? leaf : issueLeaf(signer, request, now, this.settings);
    if (next !== leaf) this.logger.info({ secret: `${this.namespace}/${name}` }, 'upload certificate issued');
    await this.write(name, secret, { [CertKey.Key]: next.key, [CertKey.Cert]: next.cert, [CertKey.Ca]: trust }, 'leaf');
  }

  /** The proxy CA's bundle where users may read it: replaced when it differs (a rotation, a dropped predecessor). */
  private async publishProxyCa(bundle: string): Promise<void> {
    const namespace = this.namespace;
    const name = UploadProxyCaBundle.configMap;
    const existing = await kubeGet({ verb: 'get', resource: 'configmaps', namespace, name }, () => this.core.readNamespacedConfigMap({ namespace, name }));
    if (existing?.data?.[UploadProxyCaBundle.configMapKey] === bundle) return;
    const body: V1ConfigMap = {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name, namespace, labels: { [CERT_LABEL]: 'ca-bundle' }, ...(existing?.metadata?.resourceVersion ? { resourceVersion: existing.metadata.resourceVersion } : {}) },
      data: { [UploadProxyCaBundle.configMapKey]: bundle },
    };
    if (existing) await kubeCall({ verb: 'replace', resource: 'configmaps', namespace, name }, () => this.core.replaceNamespacedConfigMap({ namespace, name, body }));
    else await kubeCall({ verb: 'create', resource: 'configmaps', namespace, name }, () => this.core.createNamespacedConfigMap({ namespace, body }));
    this.logger.info({ configMap: `${namespace}/${name}` }, 'upload proxy CA bundle published');
  }

  private get(name: string): Promise<V1Secret | undefined> {
    return kubeGet({ verb: 'get', resource: 'secrets', namespace: this.namespace, name }, () => this.core.readNamespacedSecret({ namespace: this.namespace, name }));
  }

  private async write(name: string, existing: V1Secret | undefined, data: Record<string, string>, kind: 'ca' | 'leaf'): Promise<void> {
    if (existing && same(decode(existing), data)) return;
    const namespace = this.namespace;
    const body: V1Secret = {
      apiVersion: 'v1',
      kind: 'Secret',
      type: 'Opaque',
      metadata: { name, namespace, labels: { [CERT_LABEL]: kind }, ...(existing?.metadata?.resourceVersion ? { resourceVersion: existing.metadata.resourceVersion } : {}) },
      data: encode(data),
    };
    if (existing) await kubeCall({ verb: 'replace', resource: 'secrets', namespace, name }, () => this.core.replaceNamespacedSecret({ namespace, name, body }));
    else await kubeCall({ verb: 'create', resource: 'secrets', namespace, name }, () => this.core.createNamespacedSecret({ namespace, body }));
  }
}
