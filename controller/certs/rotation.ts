/**
 * The upload certificates' lifecycle as pure decisions: when a CA is created, rotated or loses its
 * predecessor, which CA signs new certificates, and when a leaf must be issued again. Key
 * generation (src/pki/x509.ts) happens only in `rotateCa` and `issueLeaf`, which the caller
 * runs when a decision says so.
 *
 * Rotation: a CA is renewed once two thirds of its lifetime have passed. The new CA joins the
 * bundle at once (bundle = new + previous), but the previous CA keeps signing for one leaf
 * lifetime (the grace): every peer that was handed the old bundle (an upload pod's client-CA file is
 * fixed when the pod is made, and the pod lives less than one leaf lifetime) is gone or holds the
 * new bundle before a certificate from the new CA reaches it. The previous CA is dropped once
 * it has expired; leaves never outlive their issuer.
 */

import { X509Certificate } from 'node:crypto';
import { createCa, issueCertificate, type KeyAndCert, type LeafRequest, needsRenewal, type Subject, validityOf, type Validity } from '../../src/pki/x509.js';

/** The keys of Ferry's certificate Secrets (kubernetes.io/tls names plus the bundles). */
export const CertKey = {
  Key: 'tls.key',
  Cert: 'tls.crt',
  /** A CA Secret's trust bundle: the current CA, then the previous one while it is valid. */
  Bundle: 'ca-bundle.crt',
  PreviousKey: 'previous.key',
  PreviousCert: 'previous.crt',
  /** A leaf Secret's CA bundle: what its holder trusts on the other side. */
  Ca: 'ca.crt',
} as const;

export interface CertSettings {
  readonly caLifetimeMs: number;
  readonly leafLifetimeMs: number;
}

/** Clock skew allowance: certificates start this long before they are made. */
export const BACKDATE_MS = 5 * 60_000;

export interface CaState {
  readonly current: KeyAndCert;
  readonly previous?: KeyAndCert;
}

export type CaDecision = 'create' | 'rotate' | 'drop-previous' | 'keep';

/** Checks that leaves fit the rotation scheme: a leaf lifetime at most a third of the CA's. */
export function checkCertSettings(settings: CertSettings): CertSettings {
  if (!(settings.leafLifetimeMs > 0) || !(settings.caLifetimeMs >= 3 * settings.leafLifetimeMs)) {
    throw new Error(`certificate lifetimes: the CA's (${settings.caLifetimeMs} ms) must be at least three times a leaf's (${settings.leafLifetimeMs} ms)`);
  }
  return settings;
}

const expired = (cert: string, now: Date): boolean => validityOf(cert).notAfter.getTime() <= now.getTime();

/** Pure (given the clock): what to do with a CA Secret's contents. */
export function decideCa(state: CaState | undefined, now: Date): CaDecision {
  if (!state) return 'create';
  if (needsRenewal(state.current.cert, now)) return 'rotate';
  if (state.previous && expired(state.previous.cert, now)) return 'drop-previous';
  return 'keep';
}

/** The CA that signs new certificates now: the previous one during the grace after a rotation. */
export function signingCa(state: CaState, now: Date, settings: CertSettings): KeyAndCert {
  if (!state.previous || expired(state.previous.cert, now)) return state.current;
  const age = now.getTime() - (validityOf(state.current.cert).notBefore.getTime() + BACKDATE_MS);
  return age >= settings.leafLifetimeMs ? state.current : state.previous;
}

/** The bundle peers trust: the current CA and, while valid, the previous one. */
export function bundleOf(state: CaState, now: Date): string {
  return [state.current.cert, ...(state.previous && !expired(state.previous.cert, now) ? [state.previous.cert] : [])].join('');
}

/** Applies a decision (generating a key for create and rotate). */
export function applyCaDecision(state: CaState | undefined, decision: CaDecision, subject: Subject, now: Date, settings: CertSettings): CaState {
  const fresh = (): KeyAndCert => createCa(subject, { notBefore: new Date(now.getTime() - BACKDATE_MS), notAfter: new Date(now.getTime() + settings.caLifetimeMs) });
  switch (decision) {
    case 'create':
      return { current: fresh() };
    case 'rotate':
      return { current: fresh(), previous: state!.current };
    case 'drop-previous':
      return { current: state!.current };
    case 'keep':
      return state!;
  }
}

/** A leaf's validity: one leaf lifetime from now, never past its issuer's end. */
export function leafValidity(signer: KeyAndCert, now: Date, settings: CertSettings): Validity {
  const end = Math.min(now.getTime() + settings.leafLifetimeMs, validityOf(signer.cert).notAfter.getTime());
  return { notBefore: new Date(now.getTime() - BACKDATE_MS), notAfter: new Date(end) };
}

/** Pure: must this leaf be issued again (missing, renewal due, or not from the signing CA)? */
export function leafNeedsIssue(leaf: KeyAndCert | undefined, signer: KeyAndCert, now: Date): boolean {
  if (!leaf) return true;
  try {
    if (needsRenewal(leaf.cert, now)) return true;
    return !new X509Certificate(leaf.cert).verify(new X509Certificate(signer.cert).publicKey);
  } catch {
    return true;
  }
}

export function issueLeaf(signer: KeyAndCert, request: Omit<LeafRequest, 'notBefore' | 'notAfter'>, now: Date, settings: CertSettings): KeyAndCert {
  return issueCertificate(signer, { ...request, ...leafValidity(signer, now, settings) });
}

/** A CA state read from a Secret's data (already base64-decoded); undefined when incomplete. */
export function caStateFrom(data: Readonly<Record<string, string>> | undefined): CaState | undefined {
  const key = data?.[CertKey.Key];
  const cert = data?.[CertKey.Cert];
  if (!key || !cert) return undefined;
  const pk = data[CertKey.PreviousKey];
  const pc = data[CertKey.PreviousCert];
  return { current: { key, cert }, ...(pk && pc ? { previous: { key: pk, cert: pc } } : {}) };
}

/** A CA state as a Secret's data (not yet base64-encoded). */
export function caSecretData(state: CaState, now: Date): Record<string, string> {
  return {
    [CertKey.Key]: state.current.key,
    [CertKey.Cert]: state.current.cert,
    [CertKey.Bundle]: bundleOf(state, now),
    ...(state.previous ? { [CertKey.PreviousKey]: state.previous.key, [CertKey.PreviousCert]: state.previous.cert } : {}),
  };
}
