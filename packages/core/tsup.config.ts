import { defineConfig } from 'tsup';
import { libraryBuild } from '../../tsup.library.js';
import pkg from './package.json' with { type: 'json' };

export default defineConfig({
  ...libraryBuild,
  define: { __SPARK_EXPORT_VERSION__: JSON.stringify(pkg.version) },
});
