import type { Options } from 'tsup';

/** How every published package builds: ESM + CJS + .d.ts for Node 20, from src/index.ts. */
export const libraryBuild: Options = {
  entry: ['src/index.ts'],
  format: ['esm', 'cjs'],
  dts: true,
  clean: true,
  sourcemap: true,
  target: 'node20',
  tsconfig: 'tsconfig.json',
};
