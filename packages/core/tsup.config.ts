import { defineConfig } from 'tsup';
import { libraryBuild } from '../../tsup.library.js';
import pkg from './package.json' with { type: 'json' };

export default defineConfig({
  ...libraryBuild,
  // The root for users; `/http` for adapter authors.
  entry: { index: 'src/index.ts', http: 'src/http/index.ts' },
  define: { __SPARK_EXPORT_VERSION__: JSON.stringify(pkg.version) },
});
