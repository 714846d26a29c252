import { describe, expect, test } from '@jest/globals';
import { X509Certificate } from 'node:crypto';
import { applyCaDecision, bundleOf, caSecretData, caStateFrom, checkCertSettings, decideCa, issueLeaf, leafNeedsIssue, signingCa } from '../../controller/certs/rotation.js';
import { CertUsage } from '../../src/pki/x509.js';

const DAY = 86_400_000;
const settings = { caLifetimeMs: 30 * DAY, leafLifetimeMs: 7 * DAY };
const T0 = new Date('2026-05-01T00:00:00Z');
const at = (days: number) => new Date(T0.getTime() + days * DAY);
const subject = { commonName: 'test-ca' };
const pems = (bundle: string) => bundle.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----\n/g) ?? [];

describe('upload CA rotation', () => {
  test('created, kept, rotated at two thirds, previous kept while valid, then dropped', () => {
    expect(decideCa(undefined, T0)).toBe('create');
    const first = applyCaDecision(undefined, 'create', subject, T0, settings);
    expect(decideCa(first, at(19))).toBe('keep');
    expect(decideCa(first, at(20.1))).toBe('rotate');
    const rotated = applyCaDecision(first, 'rotate', subject, at(20.1), settings);
    expect(rotated.previous).toEqual(first.current);
    expect(pems(bundleOf(rotated, at(21)))).toEqual([rotated.current.cert, first.current.cert]);
    expect(decideCa(rotated, at(29))).toBe('keep');
    expect(decideCa(rotated, at(30.1))).toBe('drop-previous');
    expect(pems(bundleOf(rotated, at(30.1)))).toEqual([rotated.current.cert]);
    expect(caStateFrom(caSecretData(rotated, at(21)))).toEqual(rotated);
  });

  test('the previous CA signs for one leaf lifetime after a rotation, then the new one', () => {
    const first = applyCaDecision(undefined, 'create', subject, T0, settings);
    expect(signingCa(first, T0, settings)).toEqual(first.current);
    const rotated = applyCaDecision(first, 'rotate', subject, at(20), settings);
    expect(signingCa(rotated, at(21), settings)).toEqual(first.current);
    expect(signingCa(rotated, at(27.1), settings)).toEqual(rotated.current);
  });

  test('leaves: never past the issuer, re-issued when due or from another CA', () => {
    const first = applyCaDecision(undefined, 'create', subject, T0, settings);
    const leaf = issueLeaf(first.current, { commonName: 'client', usage: CertUsage.Client }, at(28), settings);
    expect(new Date(new X509Certificate(leaf.cert).validTo).getTime()).toBeLessThanOrEqual(new Date(new X509Certificate(first.current.cert).validTo).getTime());
    const fresh = issueLeaf(first.current, { commonName: 'client', usage: CertUsage.Client }, T0, settings);
    expect(leafNeedsIssue(fresh, first.current, at(1))).toBe(false);
    expect(leafNeedsIssue(fresh, first.current, at(5))).toBe(true);
    const other = applyCaDecision(undefined, 'create', subject, T0, settings);
    expect(leafNeedsIssue(fresh, other.current, at(1))).toBe(true);
    expect(leafNeedsIssue(undefined, first.current, T0)).toBe(true);
    expect(() => checkCertSettings({ caLifetimeMs: 10 * DAY, leafLifetimeMs: 7 * DAY })).toThrow(/three times/);
  });
});
