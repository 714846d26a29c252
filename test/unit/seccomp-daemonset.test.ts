/**
 * manifests/seccomp-profile.yaml (docs/adr/0011-pod-network-passt.md, "Installing the profile"): the
 * DaemonSet writes the profile the launcher pods name to the path the kubelet reads, from the path
 * the image build puts it at, and it is the only thing in the one namespace of the install that
 * is not `restricted`, with nothing beyond the hostPath and uid 0 that the job needs.
 * The node test (test/node/node.test.ts) runs it on a real kubelet.
 */

import { describe, expect, test } from '@jest/globals';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type KubernetesObject, loadAllYaml, type V1DaemonSet, type V1Namespace } from '@kubernetes/client-node';
import { LAUNCHER_SECCOMP_PROFILE } from '../../controller/vm/launcher-pod.js';
import { REPO_ROOT } from '../helpers/ferry-process.js';

const MANIFESTS = join(REPO_ROOT, 'manifests');
const FILE = 'seccomp-profile.yaml';
const KUBELET_SECCOMP_ROOT = '/var/lib/kubelet/seccomp';

const objects = (file: string): KubernetesObject[] => loadAllYaml(readFileSync(join(MANIFESTS, file), 'utf8')) as KubernetesObject[];
const mine = objects(FILE);
const ds = mine.find((o) => o.kind === 'DaemonSet') as V1DaemonSet;
const pod = ds.spec!.template.spec!;
const container = pod.containers[0]!;
const script = container.command?.[2] ?? '';

describe('the seccomp profile DaemonSet', () => {
  test('is in the kustomization, with its namespace', () => {
    const kustomization = readFileSync(join(MANIFESTS, 'kustomization.yaml'), 'utf8');
    expect(kustomization).toMatch(new RegExp(`^  - ${FILE}$`, 'm'));
    expect(mine.map((o) => `${o.kind}/${o.metadata?.name}`)).toEqual(['Namespace/ferry-node', 'DaemonSet/ferry-seccomp-profile']);
    expect(ds.metadata?.namespace).toBe('ferry-node');
  });

  test('writes the file the launcher pods name, under the kubelet seccomp root, from where the image build puts it', () => {
    const volume = pod.volumes?.[0];
    const mount = container.volumeMounts?.[0];
    expect(pod.volumes).toHaveLength(1);
    expect(volume?.hostPath).toEqual({ path: `${KUBELET_SECCOMP_ROOT}/ferry`, type: 'DirectoryOrCreate' });
    expect(mount?.name).toBe(volume?.name);
    // <mount>/<file> is <kubelet seccomp root>/<LAUNCHER_SECCOMP_PROFILE>.
    const [dir, file] = [LAUNCHER_SECCOMP_PROFILE.split('/')[0], LAUNCHER_SECCOMP_PROFILE.split('/').slice(1).join('/')];
    expect(dir).toBe('ferry');
    expect(script).toContain(`const dst = '${mount?.mountPath}/${file}';`);
    // images/lib.sh installs launcher/seccomp-launcher.json at /opt/ferry/seccomp/launcher.json.
    expect(readFileSync(join(REPO_ROOT, 'images', 'lib.sh'), 'utf8')).toContain('"$FERRY_ROOT/launcher/seccomp-launcher.json" "$app/seccomp/launcher.json"');
    expect(script).toContain("const src = '/opt/ferry/seccomp/launcher.json';");
    expect(container.readinessProbe?.exec?.command).toEqual(['cmp', '-s', '/opt/ferry/seccomp/launcher.json', `${mount?.mountPath}/${file}`]);
  });

  test('asks for nothing beyond uid 0 and the one hostPath: no capability, no escalation, read-only root, RuntimeDefault, no token', () => {
    expect(pod.securityContext).toEqual({ runAsUser: 0, runAsGroup: 0, seccompProfile: { type: 'RuntimeDefault' } });
    expect(container.securityContext).toEqual({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } });
    expect(pod.automountServiceAccountToken).toBe(false);
    expect(pod.hostNetwork ?? false).toBe(false);
    expect(pod.hostPID ?? false).toBe(false);
    expect(pod.initContainers).toBeUndefined();
    expect(pod.containers).toHaveLength(1);
  });

  test('its namespace is the only one below restricted, and holds nothing else', () => {
    const namespaces = readdirSync(MANIFESTS).filter((f) => f.endsWith('.yaml')).flatMap(objects).filter((o): o is V1Namespace => o.kind === 'Namespace');
    const levels = Object.fromEntries(namespaces.map((n) => [n.metadata?.name, n.metadata?.labels?.['pod-security.kubernetes.io/enforce']]));
    expect(levels).toEqual({ 'ferry-system': 'restricted', 'ferry-node': 'privileged' });
    const inNode = readdirSync(MANIFESTS).filter((f) => f.endsWith('.yaml')).flatMap(objects).filter((o) => o.metadata?.namespace === 'ferry-node');
    expect(inNode.map((o) => `${o.kind}/${o.metadata?.name}`)).toEqual(['DaemonSet/ferry-seccomp-profile']);
  });
});
