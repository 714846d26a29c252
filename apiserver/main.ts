/**
 * `ferry apiserver`: composition root of Ferry's aggregated API server (the upload token API,
 * `upload.cdi.kubevirt.io/v1beta1`) and of the clone admission webhook (./clone-admission.ts). Flags and environment,
 * Kubernetes clients, the keys it makes for itself (./keys.ts), the HTTPS server, a periodic
 * refresh (request-header CA, serving certificate, signing key, APIService caBundle) and signals.
 */

import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { AdmissionregistrationV1Api, ApiregistrationV1Api, AuthorizationV1Api, CoreV1Api, CustomObjectsApi, KubeConfig } from '@kubernetes/client-node';
import { CLONE_TOKEN_PUBLIC_CONFIGMAP, CLONE_TOKEN_SIGNING_SECRET, signCloneToken } from '../src/contract/clone-token.js';
import { DATASOURCE_GROUP, DATASOURCE_PLURAL, DATASOURCE_VERSION, type DataSource } from '../src/api/datasource.js';
import { signUploadToken } from '../src/contract/upload-token.js';
import { ErrorCode, FerryError, toFerryError } from '../src/errors.js';
import { createLogger, type Logger } from '../src/logging.js';
import { needsRenewal } from '../src/pki/x509.js';
import type { KeyAndCert } from '../src/pki/x509.js';
import { UPLOAD_APISERVICE_NAME } from '../src/api/upload-token-request.js';
import { ensureApiServiceCa, ensureCa, ensureSigningKey, ensureWebhookCa, servingCertificate, type SigningKey } from './keys.js';
import { EXTENSION_AUTH_CONFIGMAP, parseExtensionAuth, type RequestHeaderConfig } from './requestheader.js';
import { createApiServer } from './server.js';
import type { Decision, ResourceAttributes, TokenApiDeps } from './token-api.js';
import type { CloneAdmissionDeps } from './clone-admission.js';
import type { User, WebhookClientConfig } from './requestheader.js';

/** The MutatingWebhookConfiguration of manifests/apiserver.yaml. */
export const CLONE_WEBHOOK_CONFIGURATION = 'ferry-clone-authorization';

export const APISERVER_USAGE = `Usage: ferry apiserver [--kubeconfig FILE] [options]

Serves the aggregated API upload.cdi.kubevirt.io/v1beta1 (UploadTokenRequest create → a signed
upload token) over HTTPS, for users the kube-apiserver forwards through its front proxy and a
SubjectAccessReview allows. Makes its own token signing key, CA and serving certificate.

Options:
  --kubeconfig FILE       cluster to use (default: in-cluster, then $KUBECONFIG / ~/.kube/config)
  --namespace NS          its namespace: Secrets, the public-key ConfigMap (default $POD_NAMESPACE or ferry-system)
  --service NAME          the Service in front of it; the serving certificate is for NAME.NS.svc (default ferry-apiserver)
  --port PORT             HTTPS port (default 8443)
  --bind-address ADDR     address to listen on (default all)
  --signing-secret NAME   Secret with the token signing key (default ferry-upload-token-signing-key)
  --ca-secret NAME        Secret with the serving CA (default ferry-apiserver-ca)
  --apiservice NAME       APIService whose caBundle is kept to that CA (default ${UPLOAD_APISERVICE_NAME}; "" for none)
  --clone-signing-secret NAME  Secret with the clone token signing key (default ${CLONE_TOKEN_SIGNING_SECRET})
  --webhook-configuration NAME MutatingWebhookConfiguration whose caBundles are kept to that CA
                          (default ${CLONE_WEBHOOK_CONFIGURATION}; "" for none)
  --serving-host HOST     a further name or IP address in the serving certificate, for a webhook
                          registered by clientConfig.url (repeatable)
  --webhook-client-ca FILE      take webhook calls only with a client certificate from this CA (the
                          kube-apiserver's, from its AdmissionConfiguration kubeConfigFile); without it
                          anyone reaching the port may call the webhook (see ADR 0014)
  --webhook-client-name CN      ... and with this common name (repeatable; default any)
  --refresh-seconds N     how often keys, certificates and the request-header CA are re-read (default 60)
  --log-level LEVEL       pino level (default info)`;

export interface ApiServerConfig {
  readonly namespace: string;
  readonly service: string;
  readonly port: number;
  readonly bindAddress?: string;
  readonly signingSecret: string;
  readonly caSecret: string;
  readonly apiService: string;
  readonly cloneSigningSecret: string;
  readonly webhookConfiguration: string;
  readonly servingHosts: readonly string[];
  readonly webhookClientCa?: string;
  readonly webhookClientNames: readonly string[];
  readonly refreshSeconds: number;
}

function port(name: string, text: string | undefined, fallback: number, min: number): number {
  if (text === undefined) return fallback;
  const n = /^\d+$/.test(text) ? Number(text) : Number.NaN;
  if (!(n >= min && n <= 65535)) throw new FerryError(ErrorCode.InvalidSpec, `--${name} must be a number from ${min} to 65535, got "${text}"`);
  return n;
}

export function parseApiServerArgs(argv: readonly string[], env: NodeJS.ProcessEnv): { config: ApiServerConfig; kubeconfig?: string; logLevel: string; help: boolean } {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      kubeconfig: { type: 'string' },
      namespace: { type: 'string' },
      service: { type: 'string' },
      port: { type: 'string' },
      'bind-address': { type: 'string' },
      'signing-secret': { type: 'string' },
      'ca-secret': { type: 'string' },
      apiservice: { type: 'string' },
      'clone-signing-secret': { type: 'string' },
      'webhook-configuration': { type: 'string' },
      'serving-host': { type: 'string', multiple: true },
      'webhook-client-ca': { type: 'string' },
      'webhook-client-name': { type: 'string', multiple: true },
      'refresh-seconds': { type: 'string' },
      'log-level': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  const nonEmpty = (name: string, v: string | undefined, fallback: string): string => {
    const s = (v ?? fallback).trim();
    if (s === '') throw new FerryError(ErrorCode.InvalidSpec, `--${name} must not be empty`);
    return s;
  };
  const config: ApiServerConfig = Object.freeze({
    namespace: nonEmpty('namespace', values.namespace, env.POD_NAMESPACE || 'ferry-system'),
    service: nonEmpty('service', values.service, 'ferry-apiserver'),
    port: port('port', values.port, 8443, 1),
    ...(values['bind-address'] ? { bindAddress: values['bind-address'] } : {}),
    signingSecret: nonEmpty('signing-secret', values['signing-secret'], 'ferry-upload-token-signing-key'),
    caSecret: nonEmpty('ca-secret', values['ca-secret'], 'ferry-apiserver-ca'),
    apiService: (values.apiservice ?? UPLOAD_APISERVICE_NAME).trim(),
    cloneSigningSecret: nonEmpty('clone-signing-secret', values['clone-signing-secret'], CLONE_TOKEN_SIGNING_SECRET),
    webhookConfiguration: (values['webhook-configuration'] ?? CLONE_WEBHOOK_CONFIGURATION).trim(),
    servingHosts: Object.freeze((values['serving-host'] ?? []).map((h) => nonEmpty('serving-host', h, ''))),
    ...(values['webhook-client-ca'] !== undefined ? { webhookClientCa: nonEmpty('webhook-client-ca', values['webhook-client-ca'], '') } : {}),
    webhookClientNames: Object.freeze((values['webhook-client-name'] ?? []).map((n) => nonEmpty('webhook-client-name', n, ''))),
    refreshSeconds: port('refresh-seconds', values['refresh-seconds'], 60, 1),
  });
  return { config, ...(values.kubeconfig ? { kubeconfig: values.kubeconfig } : {}), logLevel: values['log-level'] ?? 'info', help: values.help === true };
}

async function readRequestHeader(core: CoreV1Api, logger: Logger): Promise<RequestHeaderConfig | undefined> {
  try {
    const cm = await core.readNamespacedConfigMap(EXTENSION_AUTH_CONFIGMAP);
    return parseExtensionAuth(cm.data);
  } catch (err) {
    logger.warn({ err: (err as Error).message.split('\n')[0] }, `cannot read ${EXTENSION_AUTH_CONFIGMAP.namespace}/${EXTENSION_AUTH_CONFIGMAP.name}: every caller is anonymous`);
    return undefined;
  }
}

function subjectAccessReview(authz: AuthorizationV1Api): (user: User, attributes: ResourceAttributes) => Promise<Decision> {
  return async (user, attributes) => {
    const review = await authz.createSubjectAccessReview({
      body: {
        apiVersion: 'authorization.k8s.io/v1',
        kind: 'SubjectAccessReview',
        spec: { user: user.name, ...(user.uid ? { uid: user.uid } : {}), groups: [...user.groups], extra: Object.fromEntries(Object.entries(user.extra).map(([k, v]) => [k, [...v]])), resourceAttributes: { ...attributes } },
      },
    });
    if (review.status?.allowed === true) return { allowed: true };
    return { allowed: false, reason: review.status?.reason ?? review.status?.evaluationError ?? '' };
  };
}

export async function apiServerCommand(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  let parsed: ReturnType<typeof parseApiServerArgs>;
  try {
    parsed = parseApiServerArgs(argv, env);
  } catch (err) {
    process.stderr.write(`error ${ErrorCode.InvalidSpec}: ${(err as Error).message.split('\n')[0]} (see 'ferry apiserver --help')\n`);
    return 2;
  }
  if (parsed.help) {
    process.stderr.write(`${APISERVER_USAGE}\n`);
    return 0;
  }
  const { config } = parsed;
  const logger = createLogger({ name: 'ferry-apiserver', level: parsed.logLevel });
  try {
    const kc = new KubeConfig();
    if (parsed.kubeconfig) kc.loadFromFile(parsed.kubeconfig);
    else kc.loadFromDefault();
    const core = kc.makeApiClient(CoreV1Api);
    const apireg = kc.makeApiClient(ApiregistrationV1Api);

    const admission = kc.makeApiClient(AdmissionregistrationV1Api);
    const custom = kc.makeApiClient(CustomObjectsApi);
    let signing: SigningKey = await ensureSigningKey(core, config.namespace, config.signingSecret);
    let cloneSigning: SigningKey = await ensureSigningKey(core, config.namespace, config.cloneSigningSecret, CLONE_TOKEN_PUBLIC_CONFIGMAP);
    let ca: KeyAndCert = await ensureCa(core, config.namespace, config.caSecret, new Date());
    let serving = servingCertificate(ca, config.service, config.namespace, new Date(), config.servingHosts);
    let requestHeader = await readRequestHeader(core, logger);
    const readWebhookClient = (): WebhookClientConfig | undefined => {
      if (config.webhookClientCa === undefined) return undefined;
      const ca = readFileSync(config.webhookClientCa, 'utf8');
      if (!ca.includes('BEGIN CERTIFICATE')) throw new FerryError(ErrorCode.InvalidSpec, `--webhook-client-ca ${config.webhookClientCa} holds no PEM certificate`);
      return { ca, names: config.webhookClientNames };
    };
    let webhookClient = readWebhookClient();
    if (webhookClient === undefined) logger.warn('no --webhook-client-ca: the clone webhook takes calls from anyone who reaches the port; keep it to the kube-apiserver');
    const registerCa = async (): Promise<void> => {
      if (config.apiService !== '' && !(await ensureApiServiceCa(apireg, config.apiService, ca.cert))) logger.warn({ apiService: config.apiService }, 'no such APIService: the kube-apiserver does not route to this server');
      if (config.webhookConfiguration !== '' && !(await ensureWebhookCa(admission, config.webhookConfiguration, ca.cert))) {
        logger.warn({ webhookConfiguration: config.webhookConfiguration }, 'no such MutatingWebhookConfiguration: clones are not authorized by this server');
      }
    };
    await registerCa();

    const deps: TokenApiDeps & CloneAdmissionDeps = {
      authorize: subjectAccessReview(kc.makeApiClient(AuthorizationV1Api)),
      sign: (claims) => signUploadToken(claims, signing.privateKey),
      signClone: (clone) => signCloneToken(clone, cloneSigning.privateKey, Date.now()),
      dataSource: async (namespace, name) => {
        try {
          return (await custom.getNamespacedCustomObject({ group: DATASOURCE_GROUP, version: DATASOURCE_VERSION, namespace, plural: DATASOURCE_PLURAL, name })) as DataSource;
        } catch (err) {
          if ((err as { code?: unknown }).code === 404) return undefined;
          throw err;
        }
      },
      now: () => Date.now(),
    };
    const api = createApiServer({ key: serving.key, cert: serving.cert, servingCa: ca.cert, requestHeader, ...(webhookClient ? { webhookClient } : {}) }, deps, logger);
    await new Promise<void>((resolve, reject) => {
      api.server.once('error', reject);
      api.server.listen(config.port, config.bindAddress, () => resolve());
    });
    logger.info({ port: config.port, namespace: config.namespace, requestHeader: requestHeader !== undefined }, 'apiserver listening');

    // Rotation while running: each step on its own, so one failure does not stop the others.
    const refresh = async (): Promise<void> => {
      const now = new Date();
      const steps: Array<[string, () => Promise<void>]> = [
        ['signing key', async () => void (signing = await ensureSigningKey(core, config.namespace, config.signingSecret))],
        ['clone signing key', async () => void (cloneSigning = await ensureSigningKey(core, config.namespace, config.cloneSigningSecret, CLONE_TOKEN_PUBLIC_CONFIGMAP))],
        ['CA', async () => {
          const next = await ensureCa(core, config.namespace, config.caSecret, now);
          if (next.cert !== ca.cert || needsRenewal(serving.cert, now)) {
            ca = next;
            serving = servingCertificate(ca, config.service, config.namespace, now, config.servingHosts);
          }
          await registerCa();
        }],
        ['request-header CA', async () => void (requestHeader = await readRequestHeader(core, logger))],
        ['webhook client CA', async () => void (webhookClient = readWebhookClient())],
      ];
      for (const [what, step] of steps) {
        try {
          await step();
        } catch (err) {
          logger.warn({ err: (err as Error).message.split('\n')[0] }, `refreshing the ${what} failed; keeping the current one`);
        }
      }
      api.update({ key: serving.key, cert: serving.cert, servingCa: ca.cert, requestHeader, ...(webhookClient ? { webhookClient } : {}) });
    };
    let refreshing: Promise<void> = Promise.resolve();
    const timer = setInterval(() => void (refreshing = refreshing.then(refresh)), config.refreshSeconds * 1000);

    await new Promise<void>((resolve) => {
      process.once('SIGTERM', () => resolve());
      process.once('SIGINT', () => resolve());
    });
    clearInterval(timer);
    api.server.close();
    api.server.closeAllConnections();
    return 0;
  } catch (err) {
    const error = toFerryError(err);
    logger.error({ code: error.code }, error.message.split('\n')[0] ?? error.message);
    return error.exitCode;
  }
}
