/**
 * The two keys the clone decisions need, read from Ferry's namespace: the webhook's public key
 * (ConfigMap `ferry-clone-token-public`, written by `ferry apiserver`) and the controller's seal
 * key (Secret `ferry-clone-seal-key`, 32 random bytes, created by the first controller that needs
 * it; a second replica racing it reads the winner's). Both are cached for a short while; a missing
 * public key is an error (the reconcile is retried), never a verdict.
 */

import { randomBytes, type KeyObject } from 'node:crypto';
import type { CoreV1Api } from '@kubernetes/client-node';
import { CLONE_TOKEN_PUBLIC_CONFIGMAP, CLONE_TOKEN_PUBLIC_KEY } from '../../src/contract/clone-token.js';
import { publicKeyFromPem } from '../../src/contract/upload-token.js';
import { isKube, KubeError, kubeCall, kubeGet } from '../runtime/errors.js';

export const CLONE_SEAL_SECRET = 'ferry-clone-seal-key';
const SEAL_KEY = 'key';
const CACHE_MS = 30_000;

export interface CloneKeySource {
  tokenKey(): Promise<KeyObject>;
  sealKey(): Promise<Buffer>;
}

export class CloneKeys implements CloneKeySource {
  private token: { key: KeyObject; pem: string; at: number } | undefined;
  private seal: Buffer | undefined;

  constructor(
    private readonly core: CoreV1Api,
    private readonly namespace: string,
    private readonly now: () => number = Date.now,
  ) {}

  async tokenKey(): Promise<KeyObject> {
    if (this.token && this.now() - this.token.at < CACHE_MS) return this.token.key;
    const { namespace } = this;
    const cm = await kubeGet({ verb: 'get', resource: 'configmaps', namespace, name: CLONE_TOKEN_PUBLIC_CONFIGMAP }, () => this.core.readNamespacedConfigMap({ namespace, name: CLONE_TOKEN_PUBLIC_CONFIGMAP }));
    const pem = cm?.data?.[CLONE_TOKEN_PUBLIC_KEY];
    if (!pem) throw new Error(`the clone token public key (ConfigMap ${namespace}/${CLONE_TOKEN_PUBLIC_CONFIGMAP}, key ${CLONE_TOKEN_PUBLIC_KEY}) is not there yet: is ferry apiserver running?`);
    const key = this.token?.pem === pem ? this.token.key : publicKeyFromPem(pem);
    this.token = { key, pem, at: this.now() };
    return key;
  }

  async sealKey(): Promise<Buffer> {
    if (this.seal) return this.seal;
    const { namespace } = this;
    const op = { verb: 'get', resource: 'secrets', namespace, name: CLONE_SEAL_SECRET };
    let secret = await kubeGet(op, () => this.core.readNamespacedSecret({ namespace, name: CLONE_SEAL_SECRET }));
    if (!secret) {
      const body = { apiVersion: 'v1', kind: 'Secret', type: 'Opaque', metadata: { name: CLONE_SEAL_SECRET, namespace, labels: { 'app.kubernetes.io/name': 'ferry' } }, data: { [SEAL_KEY]: randomBytes(32).toString('base64') } };
      try {
        secret = await kubeCall({ ...op, verb: 'create' }, () => this.core.createNamespacedSecret({ namespace, body }));
      } catch (err) {
        if (!isKube(err, KubeError.AlreadyExists)) throw err;
        secret = await kubeCall(op, () => this.core.readNamespacedSecret({ namespace, name: CLONE_SEAL_SECRET }));
      }
    }
    const key = Buffer.from(secret.data?.[SEAL_KEY] ?? '', 'base64');
    if (key.length < 32) throw new Error(`Secret ${namespace}/${CLONE_SEAL_SECRET} holds no 32-byte key under "${SEAL_KEY}"`);
    this.seal = key;
    return key;
  }
}
