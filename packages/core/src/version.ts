/**
 * The version of @spark-export/core, as in its package.json. Inlined at build time; code run
 * straight from the sources without the `define` (e.g. with tsx) reports `0.0.0-dev`.
 */
export const VERSION: string =
  typeof __SPARK_EXPORT_VERSION__ === 'string' ? __SPARK_EXPORT_VERSION__ : '0.0.0-dev';
