import { defineConfig } from 'tsup';

// An application, not a library: ESM only, no .d.ts. Dependencies (the workspace packages
// included) stay external and resolve from node_modules at run time.
export default defineConfig({
  entry: ['src/server.ts', 'src/cli.ts', 'src/sidecar.ts', 'src/evidence.ts'],
  format: ['esm'],
  dts: false,
  clean: true,
  sourcemap: true,
  target: 'node20',
  platform: 'node',
  tsconfig: 'tsconfig.json',
});
