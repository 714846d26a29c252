/**
 * The keys and certificates `ferry apiserver` makes for itself, as CDI's cdi-apiserver does:
 *
 * - the token signing key (RSA 2048, PS256): a Secret in its namespace, generated when absent (the
 *   first replica to create it wins; the others read it), its public half published to ConfigMap
 *   `ferry-upload-token-public` (`public.pem`) for the upload proxy;
 * - its own CA (a `kubernetes.io/tls` Secret, one year, replaced when a third of its life is left)
 *   and a serving certificate from it for `<service>.<namespace>.svc`, made in memory at start and
 *   renewed while running;
 * - the APIService's `caBundle`, patched to that CA so the kube-apiserver trusts the serving
 *   certificate.
 *
 * Decisions are pure functions of what was read (`plan…`); the `ensure…` functions apply them.
 */

import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { type AdmissionregistrationV1Api, type ApiregistrationV1Api, type CoreV1Api, PatchStrategy, setHeaderOptions, type V1APIService, type V1MutatingWebhookConfiguration, type V1Secret } from '@kubernetes/client-node';
import { UPLOAD_TOKEN_PUBLIC_CONFIGMAP, UPLOAD_TOKEN_PUBLIC_KEY } from '../src/contract/upload-token.js';
import { createCa, issueCertificate, CertUsage, type KeyAndCert, needsRenewal, validFor } from '../src/pki/x509.js';
import { ErrorCode, FerryError } from '../src/errors.js';

export const SigningKeyField = { Private: 'private.pem', Public: 'public.pem' } as const;
export const TLS_CERT = 'tls.crt';
export const TLS_KEY = 'tls.key';
export const CA_DAYS = 365;
export const SERVING_DAYS = 30;

const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');
const unb64 = (s: string | undefined): string | undefined => (s === undefined ? undefined : Buffer.from(s, 'base64').toString('utf8'));

function statusOf(err: unknown): number | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'number' ? code : undefined;
}

/** Reads an object; undefined when the apiserver says 404. */
async function readOrUndefined<T>(read: () => Promise<T>): Promise<T | undefined> {
  try {
    return await read();
  } catch (err) {
    if (statusOf(err) === 404) return undefined;
    throw err;
  }
}

export interface SigningKey {
  readonly privateKey: KeyObject;
  readonly publicPem: string;
}

/** Pure: the signing key in a Secret, or why it cannot be used. */
export function signingKeyOf(secret: V1Secret): SigningKey | { readonly problem: string } {
  const pem = unb64(secret.data?.[SigningKeyField.Private]);
  if (pem === undefined) return { problem: `Secret ${secret.metadata?.name} has no ${SigningKeyField.Private}` };
  try {
    const privateKey = createPrivateKey(pem);
    if (privateKey.asymmetricKeyType !== 'rsa') return { problem: `Secret ${secret.metadata?.name}: ${SigningKeyField.Private} is not an RSA key (PS256 needs one)` };
    const publicPem = createPublicKey(privateKey).export({ type: 'spki', format: 'pem' }).toString();
    return { privateKey, publicPem };
  } catch (err) {
    return { problem: `Secret ${secret.metadata?.name}: ${SigningKeyField.Private} is not a PEM private key (${(err as Error).message})` };
  }
}

export function newSigningKeySecret(namespace: string, name: string): V1Secret {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return {
    metadata: { name, namespace, labels: { 'app.kubernetes.io/part-of': 'ferry', 'app.kubernetes.io/component': 'apiserver' } },
    type: 'Opaque',
    data: {
      [SigningKeyField.Private]: b64(privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()),
      [SigningKeyField.Public]: b64(publicKey.export({ type: 'spki', format: 'pem' }).toString()),
    },
  };
}

/**
 * A signing key Secret, created when absent; then its public key published in ConfigMap
 * `publicConfigMap` (the upload key for the proxy, the clone key for the controller).
 */
export async function ensureSigningKey(core: CoreV1Api, namespace: string, secretName: string, publicConfigMap: string = UPLOAD_TOKEN_PUBLIC_CONFIGMAP): Promise<SigningKey> {
  let secret = await readOrUndefined(() => core.readNamespacedSecret({ namespace, name: secretName }));
  if (secret === undefined) {
    try {
      secret = await core.createNamespacedSecret({ namespace, body: newSigningKeySecret(namespace, secretName) });
    } catch (err) {
      if (statusOf(err) !== 409) throw err;
      secret = await core.readNamespacedSecret({ namespace, name: secretName }); // another replica won
    }
  }
  const key = signingKeyOf(secret);
  if ('problem' in key) throw new FerryError(ErrorCode.InvalidSpec, `${key.problem}; delete it to have a new key generated`);
  await publishPublicKey(core, namespace, key.publicPem, publicConfigMap);
  return key;
}

/** ConfigMap `name` (key public.pem), created or brought to `publicPem`. */
export async function publishPublicKey(core: CoreV1Api, namespace: string, publicPem: string, name: string = UPLOAD_TOKEN_PUBLIC_CONFIGMAP): Promise<void> {
  const existing = await readOrUndefined(() => core.readNamespacedConfigMap({ namespace, name }));
  if (existing?.data?.[UPLOAD_TOKEN_PUBLIC_KEY] === publicPem) return;
  if (existing === undefined) {
    try {
      await core.createNamespacedConfigMap({ namespace, body: { metadata: { name, namespace, labels: { 'app.kubernetes.io/part-of': 'ferry' } }, data: { [UPLOAD_TOKEN_PUBLIC_KEY]: publicPem } } });
      return;
    } catch (err) {
      if (statusOf(err) !== 409) throw err;
    }
  }
  await core.patchNamespacedConfigMap({ namespace, name, body: { data: { [UPLOAD_TOKEN_PUBLIC_KEY]: publicPem } } }, mergePatch);
}

export const CaPlan = { Keep: 'keep', Create: 'create', Replace: 'replace' } as const;
export type CaPlan = (typeof CaPlan)[keyof typeof CaPlan];

/** Pure: keep the CA in `secret`, create one (no Secret), or replace it (unreadable, or due for renewal at `now`). */
export function planCa(secret: V1Secret | undefined, now: Date): { plan: CaPlan; ca?: KeyAndCert } {
  if (secret === undefined) return { plan: CaPlan.Create };
  const cert = unb64(secret.data?.[TLS_CERT]);
  const key = unb64(secret.data?.[TLS_KEY]);
  if (cert === undefined || key === undefined) return { plan: CaPlan.Replace };
  try {
    createPrivateKey(key);
    if (needsRenewal(cert, now)) return { plan: CaPlan.Replace };
  } catch {
    return { plan: CaPlan.Replace };
  }
  return { plan: CaPlan.Keep, ca: { key, cert } };
}

function caSecret(namespace: string, name: string, ca: KeyAndCert, resourceVersion?: string): V1Secret {
  return {
    metadata: { name, namespace, ...(resourceVersion ? { resourceVersion } : {}), labels: { 'app.kubernetes.io/part-of': 'ferry', 'app.kubernetes.io/component': 'apiserver' } },
    type: 'kubernetes.io/tls',
    data: { [TLS_CERT]: b64(ca.cert), [TLS_KEY]: b64(ca.key) },
  };
}

/** The serving CA from its Secret; made (or renewed) when needed. A lost race re-reads the winner's. */
export async function ensureCa(core: CoreV1Api, namespace: string, secretName: string, now: Date): Promise<KeyAndCert> {
  for (let attempt = 0; attempt < 3; attempt++) {
    const secret = await readOrUndefined(() => core.readNamespacedSecret({ namespace, name: secretName }));
    const decided = planCa(secret, now);
    if (decided.plan === CaPlan.Keep && decided.ca) return decided.ca;
    const ca = createCa({ commonName: `ferry-apiserver-ca@${Math.floor(now.getTime() / 1000)}` }, validFor(now, CA_DAYS));
    try {
      if (decided.plan === CaPlan.Create) await core.createNamespacedSecret({ namespace, body: caSecret(namespace, secretName, ca) });
      else await core.replaceNamespacedSecret({ namespace, name: secretName, body: caSecret(namespace, secretName, ca, secret?.metadata?.resourceVersion) });
      return ca;
    } catch (err) {
      if (statusOf(err) !== 409) throw err; // AlreadyExists or Conflict: read what the other replica wrote
    }
  }
  throw new FerryError(ErrorCode.Internal, `Secret ${namespace}/${secretName}: kept changing while the CA was written`);
}

/** The names the serving certificate is for: the Service's in-cluster names. */
export function servingHosts(service: string, namespace: string): string[] {
  return [`${service}.${namespace}.svc`, `${service}.${namespace}.svc.cluster.local`, `${service}.${namespace}`, service];
}

/** `extraHosts`: names or addresses the webhook is called by besides the Service (a `clientConfig.url`). */
export function servingCertificate(ca: KeyAndCert, service: string, namespace: string, now: Date, extraHosts: readonly string[] = []): KeyAndCert {
  const hosts = [...servingHosts(service, namespace), ...extraHosts.filter((h) => !servingHosts(service, namespace).includes(h))];
  return issueCertificate(ca, { commonName: hosts[0]!, hosts, usage: CertUsage.Server, ...validFor(now, SERVING_DAYS) });
}

/** Pure: the merge patch that points `apiService` at `caPem`, or undefined when it already does. */
export function apiServicePatch(apiService: V1APIService, caPem: string): object | undefined {
  const want = b64(caPem);
  if (apiService.spec?.caBundle === want && apiService.spec?.insecureSkipTLSVerify !== true) return undefined;
  return { spec: { caBundle: want, insecureSkipTLSVerify: null } };
}

/** Patches the APIService's caBundle; false when there is no such APIService (nothing registers the API). */
export async function ensureApiServiceCa(apireg: ApiregistrationV1Api, name: string, caPem: string): Promise<boolean> {
  const apiService = await readOrUndefined(() => apireg.readAPIService({ name }));
  if (apiService === undefined) return false;
  const patch = apiServicePatch(apiService, caPem);
  if (patch !== undefined) await apireg.patchAPIService({ name, body: patch }, mergePatch);
  return true;
}

/**
 * Pure: the JSON patch that sets every webhook's `clientConfig.caBundle` to `caPem`, each guarded
 * by a `test` of the webhook's name (a configuration edited meanwhile fails the patch instead of
 * patching the wrong entry); empty when all already carry it.
 */
export function webhookCaPatch(config: V1MutatingWebhookConfiguration, caPem: string): object[] {
  const want = b64(caPem);
  return (config.webhooks ?? []).flatMap((w, i) =>
    w.clientConfig?.caBundle === want
      ? []
      : [{ op: 'test', path: `/webhooks/${i}/name`, value: w.name }, { op: 'add', path: `/webhooks/${i}/clientConfig/caBundle`, value: want }],
  );
}

/** Patches a MutatingWebhookConfiguration's caBundles; false when there is no such configuration. */
export async function ensureWebhookCa(admission: AdmissionregistrationV1Api, name: string, caPem: string): Promise<boolean> {
  const config = await readOrUndefined(() => admission.readMutatingWebhookConfiguration({ name }));
  if (config === undefined) return false;
  const patch = webhookCaPatch(config, caPem);
  if (patch.length > 0) await admission.patchMutatingWebhookConfiguration({ name, body: patch }, setHeaderOptions('Content-Type', PatchStrategy.JsonPatch));
  return true;
}
