/** runTool against real tools: output, exit status with stderr tail, missing binary, time limit. */
import { ErrorCode, FerryError } from '../../src/errors.js';
import { runTool, stderrTail } from '../../src/io/child-process.js';

async function failure(p: Promise<unknown>): Promise<FerryError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof FerryError) return err;
    throw err;
  }
  throw new Error('expected a failure');
}

describe('runTool', () => {
  test('returns stdout and stderr of a tool that succeeds', async () => {
    const out = await runTool('sh', ['-c', 'echo out; echo err >&2'], { timeoutMs: 5000 });
    expect(out).toEqual({ stdout: 'out\n', stderr: 'err\n' });
  });

  test('a failing tool: the code asked for, its exit status and the tail of stderr', async () => {
    const e = await failure(runTool('sh', ['-c', 'for i in 1 2 3 4 5 6 7; do echo line$i >&2; done; exit 3'], { timeoutMs: 5000, code: ErrorCode.TargetError, what: 'probing' }));
    expect(e.code).toBe(ErrorCode.TargetError);
    expect(e.details).toEqual({ tool: 'sh', exitCode: 3, stderr: 'line3\nline4\nline5\nline6\nline7' });
    expect(e.message.startsWith('probing: ')).toBe(true);
  });

  test('a missing tool says so', async () => {
    const e = await failure(runTool('ferry-no-such-tool', [], { timeoutMs: 5000 }));
    expect(e.code).toBe(ErrorCode.Internal);
    expect(e.message).toContain('is not installed');
  });

  test('a tool past its time limit is killed', async () => {
    const started = Date.now();
    const e = await failure(runTool('sleep', ['30'], { timeoutMs: 200 }));
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(e.message).toContain('did not finish within 200 ms');
  });

  test('stderrTail keeps the last non-empty lines, bounded', () => {
    expect(stderrTail('a\n\nb\nc\n', 2)).toBe('b\nc');
    expect(stderrTail('x'.repeat(5000)).length).toBe(1000);
    expect(stderrTail('')).toBe('');
  });
});
