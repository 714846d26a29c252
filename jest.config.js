// Tests are compiled by tsc first (npm test does both) and run as native ESM.
// dist/test/node/ (a real one-node cluster: root, the node binaries and `npm run images` needed) runs
// with the rest; FERRY_NODE_TESTS=0 leaves it out of a quick local run (README: "A real node in the tests").
export default {
  testEnvironment: 'node',
  roots: ['<rootDir>/dist/test'],
  testMatch: ['**/*.test.js'],
  testPathIgnorePatterns: process.env.FERRY_NODE_TESTS === '0' ? ['/node_modules/', '<rootDir>/dist/test/node/'] : ['/node_modules/'],
  transform: {},
  testTimeout: 60000,
  maxWorkers: 2,
  reporters: ['default', '<rootDir>/test/summary-reporter.js'],
};
