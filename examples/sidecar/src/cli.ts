#!/usr/bin/env node
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { type DateFormat, ExportManager, type FormatName, isExportError } from '@spark-export/core';
import { Registry } from 'prom-client';
import { ConfigError, loadConfig } from './config.js';
import { buildDatasets, withDatasetProblems } from './datasets.js';
import { parseEnv } from './env.js';
import { formatBytes, formatCount, formatElapsed, ProgressBar, type ProgressState } from './progress.js';
import { serve } from './serve.js';

interface OptionHelp {
  type: 'string' | 'boolean';
  short?: string;
  multiple?: boolean;
  /** Shown after the flag, e.g. `<file>`. */
  value?: string;
  /** Help lines; the first sits beside the flag. */
  help: string[];
}

/**
 * Every option, with its help: `parseArgs` reads this table and `--help` prints it, so no flag
 * works without being listed.
 */
const EXPORT_OPTIONS = {
  format: { type: 'string', value: 'csv|json|ndjson|xlsx|parquet', help: ['output format (default csv)'] },
  out: {
    type: 'string',
    short: 'o',
    value: '<file>',
    help: [
      'output file (written to <file>.part, renamed when complete);',
      'without it, the export goes to stdout',
    ],
  },
  param: {
    type: 'string',
    short: 'p',
    multiple: true,
    value: 'name=value',
    help: ['a dataset param; one --param per param (a repeated name is an error)'],
  },
  columns: { type: 'string', value: 'a,b,c', help: ['columns to write, in order'] },
  gzip: { type: 'boolean', help: ['gzip the output'] },
  'time-zone': {
    type: 'string',
    value: '<IANA name>',
    help: ['time zone of dates, e.g. Europe/Berlin (default: $EXPORT_TIME_ZONE, else UTC)'],
  },
  'date-format': {
    type: 'string',
    value: 'iso|iso-local|date',
    help: ['how dates are written (default iso)'],
  },
  excel: { type: 'boolean', help: ['CSV for Excel in European locales: BOM, ";", CRLF, decimal comma'] },
  quiet: { type: 'boolean', short: 'q', help: ['no progress bar, no summary line'] },
} satisfies Record<string, OptionHelp>;

const DATASETS_OPTIONS = {
  json: { type: 'boolean', help: ['print JSON instead of text'] },
} satisfies Record<string, OptionHelp>;

const COMMON_OPTIONS = {
  config: {
    type: 'string',
    short: 'c',
    value: '<file>',
    help: ['config file (default: $EXPORT_CONFIG, ./spark-export.config.json, else the demo)'],
  },
  help: { type: 'boolean', short: 'h', help: ['this help'] },
  version: { type: 'boolean', short: 'v', help: ['the version'] },
} satisfies Record<string, OptionHelp>;

const OPTIONS = { ...EXPORT_OPTIONS, ...DATASETS_OPTIONS, ...COMMON_OPTIONS };

function optionLines(options: Record<string, OptionHelp>): string {
  const lines: string[] = [];
  for (const [name, option] of Object.entries(options)) {
    const flag = `${option.short ? `-${option.short}, ` : '    '}--${name}${option.value ? ` ${option.value}` : ''}`;
    option.help.forEach((text, index) => {
      lines.push(`  ${(index === 0 ? flag : '').padEnd(30)} ${text}`);
    });
  }
  return lines.join('\n');
}

const USAGE = `Usage:
  spark-export serve                      run the sidecar (same as npm start)
  spark-export datasets [--json]          list the datasets of the config
  spark-export export <dataset> [options] write one export to a file or stdout

Export options:
${optionLines(EXPORT_OPTIONS)}

Datasets options:
${optionLines(DATASETS_OPTIONS)}

Common options:
${optionLines(COMMON_OPTIONS)}

A progress bar goes to stderr when it is a terminal (SPARK_EXPORT_FORCE_TTY=1 forces it),
else one summary line. Ctrl-C (exit 130) or SIGTERM (exit 143) cancels and leaves no partial
file. A closed stdout (\`| head\`) ends the export quietly with exit 0.`;

class UsageError extends Error {}

/** Runs the CLI; resolves with the exit code. */
export async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    // parseArgs ignores the help fields.
    options: OPTIONS,
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (values.version) {
    const require = createRequire(import.meta.url);
    process.stdout.write(`${(require('../package.json') as { version: string }).version}\n`);
    return 0;
  }
  if (values.config !== undefined) process.env.EXPORT_CONFIG = values.config;
  const [command, ...rest] = positionals;
  switch (command) {
    case 'serve':
      if (rest.length > 0) throw new UsageError(`serve takes no arguments, got ${rest.join(' ')}`);
      await serve();
      // The server keeps the process alive; signals end it.
      return new Promise<number>(() => {});
    case 'datasets':
      if (rest.length > 0) throw new UsageError(`datasets takes no arguments, got ${rest.join(' ')}`);
      return listDatasets(values.json ?? false);
    case 'export': {
      if (rest.length !== 1)
        throw new UsageError('export needs exactly one dataset name, e.g. spark-export export orders');
      return runExport(rest[0]!, values);
    }
    case undefined:
      throw new UsageError('missing command');
    default:
      throw new UsageError(`unknown command "${command}"`);
  }
}

async function setup({ quiet = false, seedDemo = true } = {}) {
  const settings = parseEnv(process.env);
  const config = await loadConfig({ path: settings.configPath, cwd: process.cwd() }).catch(
    async (error: unknown) => {
      throw await withDatasetProblems(error, {
        databaseUrl: settings.databaseUrl,
        env: process.env,
        poolSize: 1,
      });
    },
  );
  const built = buildDatasets(config, {
    databaseUrl: settings.databaseUrl,
    env: process.env,
    poolSize: 2,
    seedDemo,
    onSeeded: (file, ms) => {
      if (!quiet)
        process.stderr.write(`spark-export: seeded the demo database ${file} in ${formatElapsed(ms)}\n`);
    },
  });
  return { settings, config, built };
}

async function listDatasets(json: boolean): Promise<number> {
  // Describing the datasets needs no data: no demo database is created for it.
  const { built } = await setup({ seedDemo: false });
  const manager = new ExportManager({ datasets: built.datasets, metrics: false });
  try {
    if (json) {
      const list = manager.datasets.map((dataset) => ({
        name: dataset.name,
        description: dataset.description ?? null,
        formats: dataset.formats,
        columns: dataset.columns?.map((column) => column.name) ?? null,
        params: dataset.params ?? {},
      }));
      process.stdout.write(`${JSON.stringify({ datasets: list }, null, 2)}\n`);
      return 0;
    }
    for (const dataset of manager.datasets) {
      const params = Object.entries(dataset.params ?? {}).map(
        ([name, spec]) =>
          `${name}${spec.required ? '' : '?'}:${spec.type === 'enum' ? (spec.values ?? []).join('|') : spec.type}`,
      );
      process.stdout.write(
        `${dataset.name}  [${dataset.formats.join(', ')}]${params.length ? `  params: ${params.join(' ')}` : ''}\n` +
          (dataset.description ? `  ${dataset.description}\n` : ''),
      );
    }
    return 0;
  } finally {
    await manager.close({ drainTimeoutMs: 0 });
    await built.close();
  }
}

interface ExportValues {
  format?: string | undefined;
  out?: string | undefined;
  param?: string[] | undefined;
  columns?: string | undefined;
  gzip?: boolean | undefined;
  'time-zone'?: string | undefined;
  'date-format'?: string | undefined;
  excel?: boolean | undefined;
  quiet?: boolean | undefined;
}

async function runExport(dataset: string, values: ExportValues): Promise<number> {
  const params: Record<string, string> = {};
  for (const pair of values.param ?? []) {
    const at = pair.indexOf('=');
    if (at <= 0) throw new UsageError(`expected --param name=value, got "${pair}"`);
    const name = pair.slice(0, at);
    // As over HTTP (a repeated query parameter is a 400): which value was meant is a guess.
    if (Object.hasOwn(params, name)) throw new UsageError(`Expected at most one --param ${name}=...`);
    params[name] = pair.slice(at + 1);
  }
  const format = (values.format ?? 'csv') as FormatName;
  // The server's default zone, so that the CLI writes what the service would.
  const timeZone = values['time-zone'] ?? (process.env.EXPORT_TIME_ZONE?.trim() || undefined);
  const showBar =
    !values.quiet && (process.stderr.isTTY === true || isTruthy(process.env.SPARK_EXPORT_FORCE_TTY));
  const showSummary = !values.quiet;

  const { built } = await setup({ quiet: !showSummary });
  const registry = new Registry();
  // A pipe into a pager that waits for its reader is not a stalled client: no stall limit here.
  const manager = new ExportManager({
    datasets: built.datasets,
    metrics: { registry },
    maxConcurrent: 1,
    stallTimeoutMs: 0,
  });
  const controller = new AbortController();
  let interrupted: NodeJS.Signals | undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    if (interrupted) process.exit(signalExitCode(signal));
    interrupted = signal;
    controller.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const out = values.out === undefined ? undefined : resolve(values.out);
  const part = out === undefined ? undefined : `${out}.part`;
  // `flush`: fsync before the stream closes, so the renamed file is complete on disk.
  const file = part === undefined ? undefined : createWriteStream(part, { flush: true });
  if (file) await once(file, 'open');
  const destination = file ?? process.stdout;
  // The reader of stdout went away (`| head -2`): it has what it wanted, so that is a quiet,
  // successful end. The listener stays to the end, so a late EPIPE cannot crash the process.
  let stdoutClosed = false;
  if (!file) {
    process.stdout.on('error', (error: NodeJS.ErrnoException) => {
      if (error.code !== 'EPIPE') return;
      stdoutClosed = true;
      controller.abort();
    });
  }

  const started = performance.now();
  const state: ProgressState = { rows: 0, bytes: 0, elapsedMs: 0 };
  const request = {
    dataset,
    format,
    params,
    ...(values.columns ? { columns: values.columns } : {}),
    ...(values.gzip ? { compression: 'gzip' as const } : {}),
    ...(timeZone === undefined ? {} : { timeZone }),
    ...(values['date-format'] === undefined ? {} : { dateFormat: values['date-format'] as DateFormat }),
    ...(values.excel ? { csv: { preset: 'excel' as const } } : {}),
  };
  const definition = built.datasets[dataset];
  if (showBar && definition?.count) {
    try {
      const total = await definition.count(params, { signal: controller.signal });
      if (typeof total === 'number') state.totalRows = total;
    } catch {
      // Progress without a total is still progress.
    }
  }
  let bar: ProgressBar | undefined;
  let poller: NodeJS.Timeout | undefined;
  if (showBar) {
    const refresh = async () => {
      const [rows, bytes] = await Promise.all([
        registry.getSingleMetric('export_rows_total')?.get(),
        registry.getSingleMetric('export_bytes_total')?.get(),
      ]);
      state.rows = sum(rows?.values);
      state.bytes = sum(bytes?.values);
    };
    poller = setInterval(() => void refresh(), 100);
    bar = new ProgressBar(
      (text) => process.stderr.write(text),
      () => ({ ...state, elapsedMs: performance.now() - started }),
    );
  }

  try {
    const result = await manager.stream(request, destination, {
      signal: controller.signal,
      end: file !== undefined,
    });
    if (file && part && out) {
      if (!file.closed) await once(file, 'close');
      await rename(part, out);
    }
    clearInterval(poller);
    Object.assign(state, { rows: result.rows, bytes: result.bytes });
    bar?.stop();
    if (showSummary) {
      process.stderr.write(
        `spark-export: exported ${formatCount(result.rows)} rows (${formatBytes(result.bytes)}) of ${dataset} as ${format}${
          values.gzip ? '.gz' : ''
        } to ${out ?? 'stdout'} in ${formatElapsed(performance.now() - started)}\n`,
      );
    }
    return 0;
  } catch (error) {
    clearInterval(poller);
    if (!file && (stdoutClosed || hasCode(error, 'EPIPE'))) {
      bar?.stop();
      return 0;
    }
    if (bar) process.stderr.write('\n');
    if (file && part) {
      file.destroy();
      if (!file.closed) await once(file, 'close');
      await rm(part, { force: true });
    }
    if (interrupted) {
      process.stderr.write(`spark-export: cancelled${out ? `; ${values.out} was not written` : ''}\n`);
      return signalExitCode(interrupted);
    }
    throw error;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await manager.close({ drainTimeoutMs: 0 });
    await built.close();
  }
}

/** The shell's convention: 128 + the signal's number (130 for SIGINT, 143 for SIGTERM). */
function signalExitCode(signal: NodeJS.Signals): number {
  return signal === 'SIGTERM' ? 143 : 130;
}

/** Whether `error` or one of its causes has this errno code. */
function hasCode(error: unknown, code: string): boolean {
  for (let current = error, depth = 0; current instanceof Error && depth < 5; depth++) {
    if ((current as NodeJS.ErrnoException).code === code) return true;
    current = (current as { cause?: unknown }).cause;
  }
  return false;
}

function sum(values: readonly { value: number }[] | undefined): number {
  return (values ?? []).reduce((total, item) => total + item.value, 0);
}

function isTruthy(value: string | undefined): boolean {
  return value !== undefined && value !== '' && value !== '0' && value.toLowerCase() !== 'false';
}

/**
 * What failed, with the underlying cause (the CLI's user is the operator): one line, but for
 * an invalid config or environment, whose problems are listed as the server lists them.
 */
export function describeFailure(error: unknown): string {
  // The server's words: one problem on the line, several as a bulleted list.
  if (error instanceof ConfigError) return error.message;
  if (error instanceof UsageError) return `${error.message} (see spark-export --help)`;
  if (isExportError(error)) {
    const cause = (error as { cause?: unknown }).cause;
    const detail =
      cause instanceof Error && cause.message && cause.message !== error.message ? ` (${cause.message})` : '';
    return `${error.message}${detail}`.replace(/\s*\n\s*/g, ' ');
  }
  if (error instanceof Error && (error as NodeJS.ErrnoException).code?.startsWith('ERR_PARSE_ARGS_')) {
    // node's own advice about "--" does not help here; its first sentence does.
    return `${error.message.split('. ')[0]} (see spark-export --help)`;
  }
  return error instanceof Error ? error.message.replace(/\s*\n\s*/g, ' ') : String(error);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`spark-export: ${describeFailure(error)}\n`);
    const usage =
      error instanceof UsageError || (error as NodeJS.ErrnoException)?.code?.startsWith('ERR_PARSE_ARGS_');
    process.exitCode = usage ? 2 : 1;
  },
);
