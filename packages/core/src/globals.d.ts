/** The version of @spark-export/core, replaced at build time (tsup and vitest `define`). */
declare const __SPARK_EXPORT_VERSION__: string;
