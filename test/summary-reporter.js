// Prints one plain closing line, "N passed, N failed, N skipped", as the very last output. Jest
// always runs its own summary reporter after custom ones, so the line is written at process exit.
export default class SummaryReporter {
  onRunComplete(_contexts, results) {
    const skipped = results.numPendingTests + results.numTodoTests;
    const line = `tests: ${results.numPassedTests} passed, ${results.numFailedTests} failed, ${skipped} skipped\n`;
    process.once('exit', () => process.stderr.write(line));
  }
}
