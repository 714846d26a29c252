/**
 * The import engine's public face; the engine itself lives in ./engine/: `route.ts` (the pure
 * decision), `engine.ts` (gathers facts, executes the route), `tuning.ts`, `opener.ts`.
 */

export { type EngineDeps, runImport } from './engine/engine.js';
export { openerFor } from './engine/opener.js';
export { autoConnectionsFor, DEFAULT_TUNING, type ImportTuning, parseConnections } from './engine/tuning.js';
