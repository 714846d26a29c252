/**
 * The discovery documents of the aggregated API: what `kubectl api-resources`, the kube-aggregator's
 * availability probe (`GET /apis/<group>/<version>`) and its discovery merge read. Legacy
 * (non-aggregated) discovery JSON: the kube-aggregator falls back to it per group-version.
 */

import { UPLOAD_API_VERSION, UPLOAD_GROUP, UPLOAD_TOKEN_REQUEST_KIND, UPLOAD_TOKEN_REQUEST_PLURAL, UPLOAD_VERSION } from '../src/api/upload-token-request.js';

const groupVersion = { groupVersion: UPLOAD_API_VERSION, version: UPLOAD_VERSION } as const;

export const UPLOAD_API_GROUP = Object.freeze({
  kind: 'APIGroup',
  apiVersion: 'v1',
  name: UPLOAD_GROUP,
  versions: [groupVersion],
  preferredVersion: groupVersion,
});

export const API_GROUP_LIST = Object.freeze({ kind: 'APIGroupList', apiVersion: 'v1', groups: [UPLOAD_API_GROUP] });

export const UPLOAD_RESOURCE_LIST = Object.freeze({
  kind: 'APIResourceList',
  apiVersion: 'v1',
  groupVersion: UPLOAD_API_VERSION,
  resources: [
    {
      name: UPLOAD_TOKEN_REQUEST_PLURAL,
      singularName: 'uploadtokenrequest',
      namespaced: true,
      kind: UPLOAD_TOKEN_REQUEST_KIND,
      verbs: ['create'],
    },
  ],
});

/** The discovery document served at `path`, or undefined. */
export function discoveryAt(path: string): object | undefined {
  switch (path) {
    case '/apis':
      return API_GROUP_LIST;
    case `/apis/${UPLOAD_GROUP}`:
      return UPLOAD_API_GROUP;
    case `/apis/${UPLOAD_API_VERSION}`:
      return UPLOAD_RESOURCE_LIST;
    default:
      return undefined;
  }
}
