/**
 * The one CRD generator: schema builders (every node typed and described, so `kubectl explain`
 * documents it) and `crd()`, which turns a kind's names, schema, printer columns and version into
 * a CustomResourceDefinition. src/api/crds.ts (kubevirt.io) and src/api/datavolume-crd.ts
 * (cdi.kubevirt.io) describe their kinds with it; src/api/crd-files.ts writes them.
 */

export type Schema = Record<string, unknown>;

export const str = (description: string, extra: Schema = {}): Schema => ({ type: 'string', description, ...extra });
export const int = (description: string, extra: Schema = {}): Schema => ({ type: 'integer', description, ...extra });
export const bool = (description: string): Schema => ({ type: 'boolean', description });
export const obj = (description: string, properties: Schema = {}, extra: Schema = {}): Schema => ({ type: 'object', description, properties, ...extra });
/** An object whose unknown fields are kept (the upstream type has more than Ferry reads). */
export const open = (description: string, properties: Schema = {}, extra: Schema = {}): Schema =>
  obj(description, properties, { 'x-kubernetes-preserve-unknown-fields': true, ...extra });
export const arr = (description: string, items: Schema): Schema => ({ type: 'array', description, items });
export const quantity = (description: string): Schema => ({ 'x-kubernetes-int-or-string': true, description, anyOf: [{ type: 'integer' }, { type: 'string' }] });
export const quantities = (description: string): Schema => ({ type: 'object', description, additionalProperties: quantity('a quantity') });
export const empty = (description: string): Schema => open(description);
export const strings = (description: string): Schema => ({ type: 'object', description, additionalProperties: { type: 'string' } });

/** A CEL rule the apiserver checks at create and update (`x-kubernetes-validations`). */
export interface Rule {
  readonly rule: string;
  readonly message: string;
  /** Where the error points, relative to the node the rule sits on (e.g. `.pullMethod`). */
  readonly fieldPath?: string;
  readonly reason?: 'FieldValueInvalid' | 'FieldValueForbidden' | 'FieldValueRequired' | 'FieldValueDuplicate';
}

/** `schema` with CEL rules attached. */
export function validated(schema: Schema, ...rules: readonly Rule[]): Schema {
  return { ...schema, 'x-kubernetes-validations': rules.map((r) => ({ ...r })) };
}

/**
 * A field Ferry refuses wherever it appears: declared (so rules above it compile and `kubectl
 * explain` says so), then refused by a rule on the field itself, so the apiserver's error names it.
 */
export function refused(description: string, message: string, properties: Schema = {}): Schema {
  return validated(open(`${description} Refused by Ferry: ${message}`, properties), { rule: 'false', message, reason: 'FieldValueForbidden' });
}

export interface PrinterColumn {
  readonly name: string;
  readonly type: 'string' | 'integer' | 'number' | 'boolean' | 'date';
  readonly jsonPath: string;
  readonly description?: string;
  readonly priority?: number;
}

export interface KindDefinition {
  readonly group: string;
  readonly version: string;
  readonly kind: string;
  readonly plural: string;
  readonly shortNames: readonly string[];
  readonly categories?: readonly string[];
  readonly scope?: 'Namespaced' | 'Cluster';
  /** One line for the root of `kubectl explain <kind>`. */
  readonly description: string;
  readonly spec: Schema;
  readonly status: Schema;
  readonly columns: readonly PrinterColumn[];
}

export const AGE_COLUMN: PrinterColumn = { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' };

export function crd(def: KindDefinition): Record<string, unknown> {
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: { name: `${def.plural}.${def.group}`, labels: { 'app.kubernetes.io/part-of': 'ferry' } },
    spec: {
      group: def.group,
      names: {
        kind: def.kind,
        listKind: `${def.kind}List`,
        plural: def.plural,
        singular: def.kind.toLowerCase(),
        shortNames: [...def.shortNames],
        categories: [...(def.categories ?? ['all'])],
      },
      scope: def.scope ?? 'Namespaced',
      versions: [
        {
          name: def.version,
          served: true,
          storage: true,
          subresources: { status: {} },
          additionalPrinterColumns: def.columns.map((c) => ({ ...c })),
          schema: {
            openAPIV3Schema: obj(def.description, { apiVersion: str('API version.'), kind: str('Kind.'), metadata: { type: 'object' }, spec: def.spec, status: def.status }, { required: ['spec'] }),
          },
        },
      ],
    },
  };
}
