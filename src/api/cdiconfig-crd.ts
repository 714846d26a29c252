/** The CDIConfig CRD (`cdiconfigs.cdi.kubevirt.io`, cluster-scoped), through the one generator (./crd-schema.ts). */

import { AGE_COLUMN, crd, obj, open, type Schema, str, strings } from './crd-schema.js';
import { CDICONFIG_GROUP, CDICONFIG_KIND, CDICONFIG_NAME, CDICONFIG_PLURAL, CDICONFIG_VERSION, PERCENT_PATTERN } from './cdiconfig.js';

const fraction = (description: string): Schema => str(description, { pattern: PERCENT_PATTERN });

const filesystemOverhead = (what: string): Schema =>
  obj(`Fraction of a Filesystem volume kept free for the filesystem's own use ${what}; a DataVolume's spec.storage request is grown by it.`, {
    global: fraction('For every storage class without its own value, as a decimal from 0 to 1 ("0.06").'),
    storageClass: { ...strings('Per storage class name: the fraction for volumes of that class.'), additionalProperties: fraction('A fraction from 0 to 1.') },
  });

const importProxy = (what: string): Schema =>
  obj(`The proxy importer pods use for HTTP(S) sources ${what}.`, {
    HTTPProxy: str('Proxy URL for http:// sources.'),
    HTTPSProxy: str('Proxy URL for https:// sources.'),
    noProxy: str('Comma-separated hosts and domains reached without the proxy.'),
    trustedCAProxy: str('Name of a ConfigMap in Ferry\'s namespace whose key ca.crt is the CA of a TLS-intercepting proxy; importers trust it beside the source\'s CAs.'),
  });

const resources = (description: string): Schema => open(description, { limits: strings('Limits (cpu, memory).'), requests: strings('Requests (cpu, memory).') });

export const CDICONFIG_CRD = crd({
  group: CDICONFIG_GROUP,
  version: CDICONFIG_VERSION,
  kind: CDICONFIG_KIND,
  plural: CDICONFIG_PLURAL,
  shortNames: [],
  categories: [],
  scope: 'Cluster',
  description: `Cluster-wide settings of the data importer, as CDI's CDIConfig: one object, named "${CDICONFIG_NAME}", kept by ferry controller (it creates it and writes status).`,
  spec: open('What the cluster admin sets; empty fields take the controller defaults.', {
    uploadProxyURLOverride: str('URL of the upload proxy as users reach it (with https://); virtctl and ferry image-upload use it before status.uploadProxyURL.'),
    scratchSpaceStorageClass: str('Storage class of scratch volumes (default: the target volume\'s class).'),
    podResourceRequirements: resources('Resources of importer and upload pods.'),
    filesystemOverhead: filesystemOverhead('(set here to override the controller default)'),
    importProxy: importProxy('(set here to use one)'),
  }),
  status: open('The values in effect: the spec where set, else the controller defaults.', {
    uploadProxyURL: str('URL of the upload proxy: spec.uploadProxyURLOverride, else the controller\'s --upload-proxy-url.'),
    scratchSpaceStorageClass: str('Storage class of scratch volumes.'),
    defaultPodResourceRequirements: resources('Resources of importer and upload pods.'),
    filesystemOverhead: filesystemOverhead('(in effect)'),
    importProxy: importProxy('(in effect)'),
  }),
  columns: [AGE_COLUMN],
});
