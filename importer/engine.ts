/**
 * The import engine's public face; the engine itself lives in ./engine/: route.ts (the pure
 * decision), engine.ts (gathers the facts, executes the route), raw.ts and convert.ts (the paths),
 * context.ts, abort.ts, declared-size.ts, tuning.ts, opener.ts. See docs/adr/0009-import-route.md.
 */

export { type EngineDeps, runImport } from './engine/engine.js';
export { openerFor } from './engine/opener.js';
export { autoConnectionsFor, DEFAULT_TUNING, type ImportTuning, parseConnections } from './engine/tuning.js';
