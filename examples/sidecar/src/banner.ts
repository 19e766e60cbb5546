import type { DatasetDefinition, ParamSpec } from '@spark-export/core';

export interface BannerOptions {
  origin: string;
  prefix: string;
  datasets: Record<string, DatasetDefinition>;
  /** Whether requests need `Authorization: Bearer $EXPORT_API_TOKEN`. */
  auth: boolean;
  /** The owner header, if any: the commands send a sample value. */
  ownerHeader: string | undefined;
  /** The config the datasets came from, for the first line. */
  configLabel: string;
}

/** The three commands of the banner, in order: create a job, poll it, download its file. */
export function curlCommands(options: BannerOptions): [create: string, poll: string, download: string] {
  const [name, dataset] = Object.entries(options.datasets)[0] ?? ['orders', undefined];
  const format = dataset?.formats?.includes('csv') === false ? dataset.formats[0]! : 'csv';
  const params = exampleParams(name, dataset);
  const body = JSON.stringify({ dataset: name, format, ...(Object.keys(params).length ? { params } : {}) });
  const headers = [
    ...(options.auth ? [`-H "Authorization: Bearer $EXPORT_API_TOKEN"`] : []),
    ...(options.ownerHeader ? [`-H '${options.ownerHeader}: demo-user'`] : []),
  ].join(' ');
  const h = headers ? ` ${headers}` : '';
  const api = `${options.origin}${options.prefix}`;
  // The job's path comes from the Location header of the 202, so the next two commands can
  // be pasted as they are.
  return [
    `JOB=$(curl -sS -o /dev/null -w '%header{location}' -X POST ${api}/jobs${h} -H 'Content-Type: application/json' -d '${body}')`,
    `curl -sS${h} "${options.origin}$JOB"`,
    `curl -sS -f${h} -o ${name}.${format} "${options.origin}$JOB/download"`,
  ];
}

/** What `npm start` prints for humans (on stderr; stdout carries the JSON logs). */
export function banner(options: BannerOptions): string {
  const [create, poll, download] = curlCommands(options);
  const names = Object.keys(options.datasets).join(', ');
  return [
    '',
    `spark-export sidecar: ${options.origin}${options.prefix}  (datasets: ${names}; ${options.configLabel})`,
    '',
    'Create an export job, poll it until "status":"succeeded", then download the file:',
    '',
    `  ${create}`,
    `  ${poll}`,
    `  ${download}`,
    '',
    `Health: curl -sS ${options.origin}${options.prefix}/status    Stop: Ctrl-C (drains running exports)`,
    '',
  ].join('\n');
}

function exampleParams(
  name: string,
  dataset: DatasetDefinition | undefined,
): Record<string, string | number | boolean> {
  const params: Record<string, string | number | boolean> = {};
  for (const [param, spec] of Object.entries(dataset?.params ?? {})) {
    // The demo's orders: half a year is a good first export (about 500,000 rows).
    if (name === 'orders' && param === 'from' && spec.type === 'date') params[param] = '2025-07-01';
    else if (spec.required && spec.default === undefined) params[param] = exampleValue(spec);
  }
  return params;
}

function exampleValue(spec: ParamSpec): string | number | boolean {
  switch (spec.type) {
    case 'date':
      return new Date().toISOString().slice(0, 10);
    case 'integer':
    case 'number':
      return spec.min ?? 1;
    case 'boolean':
      return true;
    case 'enum':
      return spec.values?.[0] ?? '';
    default:
      return 'example';
  }
}
