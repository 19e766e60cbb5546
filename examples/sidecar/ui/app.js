// The exports page of the sidecar: plain DOM, no framework, no inline code (the page is served
// with a strict Content-Security-Policy). It talks to the same HTTP API as any client, with the
// same token and owner headers, and follows running jobs through GET /jobs/:id/events.
//
// The events are read with fetch rather than the browser's EventSource: EventSource cannot send
// an Authorization header or the owner header. The reader below keeps EventSource's behaviour
// where it matters: it reconnects after a dropped connection with Last-Event-ID, stops on 204,
// and waits the server's `retry:` before reconnecting.

const PREFIX = '/export';
const FINISHED = new Set(['succeeded', 'failed', 'cancelled', 'expired']);
const STORAGE_KEY = 'spark-export-access';

const $ = (id) => document.getElementById(id);
const config = { auth: 'none', ownerHeader: null };
const access = loadAccess();
const datasets = new Map();
const jobs = new Map();

function loadAccess() {
  try {
    return JSON.parse(sessionStorage.getItem(STORAGE_KEY) ?? '{}');
  } catch {
    return {};
  }
}

function apiHeaders(extra = {}) {
  const headers = { ...extra };
  if (config.auth === 'bearer' && access.token) headers.authorization = `Bearer ${access.token}`;
  if (config.ownerHeader && access.owner) headers[config.ownerHeader] = access.owner;
  return headers;
}

function api(path, init = {}) {
  return fetch(`${PREFIX}${path}`, { ...init, headers: apiHeaders(init.headers) });
}

function element(tag, properties = {}, children = []) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(properties)) {
    if (name === 'text') node.textContent = value;
    else if (name in node && typeof value !== 'string') node[name] = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

/** The message of a problem+json answer, or a line about the status. */
async function problemText(response) {
  try {
    const problem = await response.json();
    return problem.detail ?? problem.title ?? `HTTP ${response.status}`;
  } catch {
    return `HTTP ${response.status}`;
  }
}

function notify(text) {
  $('notice').textContent = text;
}

// --- access (token, owner) ---------------------------------------------------------------------

function setUpAccess() {
  const needsToken = config.auth === 'bearer';
  const needsOwner = Boolean(config.ownerHeader);
  if (!needsToken && !needsOwner) return;
  $('access').hidden = false;
  $('token-field').hidden = !needsToken;
  $('owner-field').hidden = !needsOwner;
  $('owner-header-name').textContent = config.ownerHeader ?? '';
  $('token').value = access.token ?? '';
  $('owner').value = access.owner ?? '';
  $('access-form').addEventListener('submit', (event) => {
    event.preventDefault();
    access.token = $('token').value.trim();
    access.owner = $('owner').value.trim();
    sessionStorage.setItem(STORAGE_KEY, JSON.stringify(access));
    void reload();
  });
}

// --- datasets and the start form -----------------------------------------------------------------

function renderDatasets(list) {
  const container = $('datasets');
  container.replaceChildren();
  const select = $('dataset');
  select.replaceChildren();
  datasets.clear();
  if (list.length === 0) container.append(element('p', { text: 'No datasets are configured.' }));
  for (const dataset of list) {
    datasets.set(dataset.name, dataset);
    select.append(element('option', { value: dataset.name, text: dataset.name }));
    const details = element('dl', { class: 'dataset' }, [
      element('dt', { text: dataset.name }),
      element('dd', { text: dataset.description ?? '' }),
      element('dd', {
        text: `Columns: ${dataset.columns ? dataset.columns.map((column) => column.label).join(', ') : 'as the source gives them'}`,
      }),
      element('dd', {
        text: `Parameters: ${
          Object.entries(dataset.params)
            .map(([name, spec]) => `${name} (${spec.type}${spec.required ? ', required' : ''})`)
            .join(', ') || 'none'
        }`,
      }),
      element('dd', { text: `Formats: ${dataset.formats.join(', ')}` }),
    ]);
    container.append(details);
  }
  renderForm();
}

function renderForm() {
  const dataset = datasets.get($('dataset').value);
  const format = $('format');
  format.replaceChildren();
  const columns = $('columns');
  columns.replaceChildren(element('legend', { text: 'Columns' }));
  const params = $('params');
  params.replaceChildren(element('legend', { text: 'Parameters' }));
  if (!dataset) return;
  for (const name of dataset.formats) format.append(element('option', { value: name, text: name }));
  columns.hidden = !dataset.columns;
  for (const column of dataset.columns ?? []) {
    const id = `column-${column.name}`;
    columns.append(
      element('label', { for: id }, [
        element('input', { id, type: 'checkbox', name: 'column', value: column.name, checked: true }),
        ` ${column.label}`,
      ]),
    );
  }
  const entries = Object.entries(dataset.params);
  params.hidden = entries.length === 0;
  for (const [name, spec] of entries) {
    const id = `param-${name}`;
    let input;
    if (spec.values) {
      input = element('select', { id, name });
      if (!spec.required) input.append(element('option', { value: '', text: '(default)' }));
      for (const value of spec.values)
        input.append(element('option', { value: String(value), text: String(value) }));
    } else if (spec.type === 'boolean') {
      input = element('select', { id, name }, [
        element('option', { value: '', text: '(default)' }),
        element('option', { value: 'true', text: 'true' }),
        element('option', { value: 'false', text: 'false' }),
      ]);
    } else {
      const type =
        spec.type === 'integer' || spec.type === 'number' ? 'number' : spec.type === 'date' ? 'date' : 'text';
      input = element('input', { id, name, type });
      if (spec.min !== undefined) input.setAttribute('min', String(spec.min));
      if (spec.max !== undefined) input.setAttribute('max', String(spec.max));
      if (spec.type === 'integer') input.setAttribute('step', '1');
      if (spec.default !== undefined) input.setAttribute('placeholder', String(spec.default));
      if (spec.required) input.required = true;
    }
    input.dataset.type = spec.type;
    params.append(
      element('p', {}, [element('label', { for: id, text: `${name}${spec.required ? ' *' : ''}` }), input]),
    );
  }
}

function paramValue(input) {
  const text = input.value.trim();
  if (text === '') return undefined;
  switch (input.dataset.type) {
    case 'integer':
    case 'number':
      return Number(text);
    case 'boolean':
      return text === 'true';
    default:
      return text;
  }
}

async function startExport(event) {
  event.preventDefault();
  notify('');
  const dataset = datasets.get($('dataset').value);
  if (!dataset) return;
  const body = { dataset: dataset.name, format: $('format').value, compression: $('compression').value };
  if (dataset.columns) {
    body.columns = [...$('columns').querySelectorAll('input[name="column"]:checked')].map(
      (input) => input.value,
    );
  }
  const params = {};
  for (const input of $('params').querySelectorAll('input, select')) {
    const value = paramValue(input);
    if (value !== undefined) params[input.name] = value;
  }
  if (Object.keys(params).length > 0) body.params = params;
  const button = $('start-button');
  button.disabled = true;
  try {
    const response = await api('/jobs', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    if (response.status === 429 || response.status === 503) {
      const seconds = Number(response.headers.get('retry-after')) || 1;
      await response.body?.cancel();
      notify(`Busy, retry in ${seconds} s`);
      return;
    }
    if (!response.ok) {
      notify(`Could not start the export: ${await problemText(response)}`);
      return;
    }
    const job = await response.json();
    showJob(job, { first: true });
    notify('');
  } catch (error) {
    notify(`Could not start the export: ${error.message}`);
  } finally {
    button.disabled = false;
  }
}

// --- jobs ------------------------------------------------------------------------------------

function percentOf(job) {
  const { rows, totalRows } = job.progress;
  if (job.status === 'succeeded') return 100;
  if (!totalRows) return null;
  return Math.min(100, Math.floor((rows / totalRows) * 1000) / 10);
}

/** Adds or updates the job's entry; starts following it while it is not finished. */
function showJob(job, { first = false } = {}) {
  let entry = jobs.get(job.id);
  if (!entry) {
    const title = element('h3', {
      text: `${job.dataset} · ${job.format}${job.compression === 'gzip' ? ' · gzip' : ''}`,
    });
    const status = element('p', { class: 'status', 'aria-live': 'polite' });
    const bar = element('progress', {
      max: 100,
      'aria-label': `Progress of ${job.dataset} export ${job.id}`,
    });
    const rows = element('p', { class: 'rows' });
    const actions = element('p', { class: 'actions' });
    const node = element('li', { 'data-job-id': job.id }, [title, status, bar, rows, actions]);
    const list = $('jobs');
    if (first) list.prepend(node);
    else list.append(node);
    entry = { job, node, status, bar, rows, actions, watching: false, controller: new AbortController() };
    jobs.set(job.id, entry);
  }
  entry.job = job;
  render(entry);
  if (!FINISHED.has(job.status) && !entry.watching) {
    entry.watching = true;
    void follow(entry).finally(() => {
      entry.watching = false;
    });
  }
}

function render(entry) {
  const { job } = entry;
  const percent = percentOf(job);
  entry.node.dataset.status = job.status;
  entry.status.textContent =
    job.status === 'queued' && job.queuePosition ? `queued (place ${job.queuePosition})` : job.status;
  if (job.error) entry.status.textContent += `: ${job.error.message}`;
  if (percent === null) entry.bar.removeAttribute('value');
  else entry.bar.value = percent;
  entry.bar.setAttribute('aria-valuetext', percent === null ? `${job.progress.rows} rows` : `${percent} %`);
  const total = job.progress.totalRows === null ? '' : ` of ${job.progress.totalRows.toLocaleString('en')}`;
  entry.rows.textContent = `${job.progress.rows.toLocaleString('en')}${total} rows, ${job.progress.bytes.toLocaleString('en')} bytes${
    percent === null ? '' : ` (${percent} %)`
  }`;
  entry.actions.replaceChildren();
  if (job.status === 'succeeded' && job.links.download) {
    entry.actions.append(
      element('button', { type: 'button', text: 'Download', onclick: () => download(entry) }),
    );
  }
  if (job.status === 'queued' || job.status === 'running') {
    entry.actions.append(element('button', { type: 'button', text: 'Cancel', onclick: () => cancel(entry) }));
  }
}

async function download(entry) {
  const response = await api(`/jobs/${entry.job.id}/download`);
  if (!response.ok) {
    notify(`Could not download: ${await problemText(response)}`);
    return;
  }
  const disposition = response.headers.get('content-disposition') ?? '';
  const name = /filename="([^"]+)"/.exec(disposition)?.[1] ?? entry.job.file?.name ?? entry.job.id;
  const url = URL.createObjectURL(await response.blob());
  const link = element('a', { href: url, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

async function cancel(entry) {
  const response = await api(`/jobs/${entry.job.id}/cancel`, { method: 'POST' });
  if (response.ok) showJob(await response.json());
  else notify(`Could not cancel: ${await problemText(response)}`);
}

const delay = (ms, signal) =>
  new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => clearTimeout(timer), { once: true });
  });

/** Follows the job's events until it finishes (reconnecting with Last-Event-ID when dropped). */
async function follow(entry) {
  const { signal } = entry.controller;
  let lastEventId = null;
  let retryMs = 2000;
  while (!signal.aborted && !FINISHED.has(entry.job.status)) {
    let response;
    try {
      const headers = { accept: 'text/event-stream' };
      if (lastEventId) headers['last-event-id'] = lastEventId;
      response = await api(`/jobs/${entry.job.id}/events`, { headers, signal });
    } catch {
      await delay(retryMs, signal);
      continue;
    }
    if (response.status === 204) return;
    if (response.status === 429) {
      const seconds = Number(response.headers.get('retry-after')) || 5;
      await response.body?.cancel();
      entry.status.textContent = `${entry.job.status} (live updates busy, retry in ${seconds} s)`;
      await delay(seconds * 1000, signal);
      continue;
    }
    if (!response.ok) {
      entry.status.textContent = `${entry.job.status} (${await problemText(response)})`;
      return;
    }
    try {
      for await (const message of readEvents(response.body)) {
        if (message.retry) retryMs = Number(message.retry) || retryMs;
        if (message.id) lastEventId = message.id;
        if (!message.event) continue;
        const data = JSON.parse(message.data ?? '{}');
        if (message.event === 'progress') {
          entry.job = {
            ...entry.job,
            status: data.status,
            progress: { rows: data.rows, bytes: data.bytes, totalRows: data.totalRows },
          };
          render(entry);
        } else {
          showJob(data);
        }
      }
    } catch {
      // A dropped connection: reconnect below, from the last event seen.
    }
    if (!FINISHED.has(entry.job.status)) await delay(retryMs, signal);
  }
}

/** Parses a text/event-stream body into messages ({ event, id, data, retry }). */
async function* readEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, '\n');
    let end = buffer.indexOf('\n\n');
    while (end !== -1) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const message = {};
      for (const line of block.split('\n')) {
        if (line === '' || line.startsWith(':')) continue;
        const colon = line.indexOf(':');
        const field = colon === -1 ? line : line.slice(0, colon);
        const text = colon === -1 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (field === 'data') message.data = message.data === undefined ? text : `${message.data}\n${text}`;
        else message[field] = text;
      }
      yield message;
      end = buffer.indexOf('\n\n');
    }
  }
}

// --- start-up --------------------------------------------------------------------------------

async function reload() {
  notify('');
  for (const entry of jobs.values()) entry.controller.abort();
  jobs.clear();
  $('jobs').replaceChildren();
  const response = await api('/datasets');
  if (!response.ok) {
    $('datasets').replaceChildren(
      element('p', { text: `Could not list the datasets: ${await problemText(response)}` }),
    );
    return;
  }
  renderDatasets((await response.json()).datasets);
  const list = await api('/jobs?limit=20');
  if (list.ok) for (const job of (await list.json()).jobs) showJob(job);
}

async function main() {
  try {
    Object.assign(config, await (await fetch(`${PREFIX}/ui/config.json`)).json());
  } catch {
    // Without the page's config, no token or owner fields: an open sidecar still works.
  }
  setUpAccess();
  $('dataset').addEventListener('change', renderForm);
  $('start').addEventListener('submit', startExport);
  if ((config.auth === 'bearer' && !access.token) || (config.ownerHeader && !access.owner)) {
    $('datasets').replaceChildren(
      element('p', { text: 'Enter your access details above to see the datasets.' }),
    );
  }
  const status = await fetch(`${PREFIX}/status`)
    .then((response) => response.json())
    .catch(() => null);
  $('service-status').textContent = status
    ? `Service ${status.status}, version ${status.version}`
    : 'Service unreachable';
  if ((config.auth === 'bearer' && !access.token) || (config.ownerHeader && !access.owner)) return;
  await reload();
}

void main();
