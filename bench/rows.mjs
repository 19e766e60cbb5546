// The rows every benchmark exports, and the hand-written baselines' CSV rules: shared by
// bench/formats.mjs and bench/peers.mjs so that both measure the same work.

import { once } from 'node:events';
import { createWriteStream } from 'node:fs';

export const CHUNK_CHARS = 64 * 1024;

export const COLUMNS = ['id', 'name', 'email', 'amount', 'created_at', 'active', 'note'];
/** The columns as a dataset declares them: the encoders compile a path for each type. */
export const TYPED_COLUMNS = [
  { name: 'id', type: 'integer' },
  { name: 'name', type: 'string' },
  { name: 'email', type: 'string' },
  { name: 'amount', type: 'number' },
  { name: 'created_at', type: 'date' },
  { name: 'active', type: 'boolean' },
  { name: 'note', type: 'string' },
];

// -----------------------------------------------------------------------------------

/** mulberry32: a small seeded PRNG, so every variant exports exactly the same rows. */
function prng(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const FIRST = ['Ada', 'Grace', 'Linus', 'Margaret', 'Ken', 'Barbara', 'Dennis', 'Frances', 'Edsger', 'Radia'];
const LAST = ['Lovelace', 'Hopper', 'Torvalds', 'Hamilton', 'Thompson', 'Liskov', 'Ritchie', 'Allen'];
const NOTES = [
  'paid on time',
  'customer asked for an invoice copy',
  'refund, partial',
  'shipped in two parcels, "express"',
  'line one\nline two',
  '=HYPERLINK("http://example.com")',
  'discount: 10%, loyalty',
  'Größe L – café',
];
const EPOCH = Date.UTC(2024, 0, 1);

/** The rows every variant exports: the same `count` rows for the same seed. */
export function* generateRows(count, seed = 42) {
  const random = prng(seed);
  for (let id = 1; id <= count; id++) {
    const first = FIRST[Math.floor(random() * FIRST.length)];
    const last = LAST[Math.floor(random() * LAST.length)];
    const pick = random();
    yield {
      id,
      name: `${first} ${last}`,
      email: `${first.toLowerCase()}.${last.toLowerCase()}${id}@example.com`,
      amount: Math.floor(random() * 1_000_000) / 100,
      created_at: new Date(EPOCH + Math.floor(random() * 31_536_000_000)).toISOString(),
      active: random() < 0.7,
      // Half the notes are empty; the rest cycle through plain text, commas, quotes, newlines
      // and a leading `=` (formula escaping).
      note: pick < 0.5 ? '' : NOTES[Math.floor((pick - 0.5) * 2 * NOTES.length)],
    };
  }
}

/** The same rows from an async generator: one promise per row, as a cursor gives them. */
export async function* generateRowsAsync(count, seed = 42) {
  yield* generateRows(count, seed);
}

// ---- variants (child process) ------------------------------------------------------------------

/** The manager's CSV rules by hand: csv-stringify quoting, formula cells prefixed with `'`. */
export function csvCell(text) {
  if (text === '') return text;
  const first = text.charCodeAt(0);
  if (
    first === 0x3d ||
    first === 0x2b ||
    first === 0x2d ||
    first === 0x40 ||
    first === 0x09 ||
    first === 0x0d
  ) {
    text = `'${text}`;
  }
  if (!/[",\r\n]/.test(text)) return text;
  return `"${text.replaceAll('"', '""')}"`;
}

export function csvLine(row) {
  return `${row.id},${csvCell(row.name)},${csvCell(row.email)},${row.amount},${csvCell(row.created_at)},${row.active ? 'true' : 'false'},${csvCell(row.note)}\n`;
}

/** Baseline: encode each row by hand, gather ~64 KiB, write and wait for `drain`. */
export async function writeBatched(path, rows, { head, encode, between = '', tail = '' }) {
  const out = createWriteStream(path);
  let chunk = head;
  let first = true;
  for (const row of rows) {
    if (first) first = false;
    else chunk += between;
    chunk += encode(row);
    if (chunk.length >= CHUNK_CHARS) {
      if (!out.write(chunk)) await once(out, 'drain');
      chunk = '';
    }
  }
  chunk += tail;
  out.end(chunk);
  await once(out, 'finish');
}

/**
 * Baseline over an async source (a cursor): the same batching into ~64 KiB chunks, `write()`
 * and `drain`, into any Writable (a file, or a gzip stream in front of one).
 */
export async function writeBatchedAsync(out, rows, { head, encode, between = '', tail = '' }) {
  let chunk = head;
  let first = true;
  for await (const row of rows) {
    if (first) first = false;
    else chunk += between;
    chunk += encode(row);
    if (chunk.length >= CHUNK_CHARS) {
      if (!out.write(chunk)) await once(out, 'drain');
      chunk = '';
    }
  }
  chunk += tail;
  out.end(chunk);
  await once(out, 'finish');
}

/** Rows of the async source in batches of `size` (for the peers whose API takes arrays). */
export async function* inBatches(rows, size) {
  let batch = [];
  for await (const row of rows) {
    batch.push(row);
    if (batch.length === size) {
      yield batch;
      batch = [];
    }
  }
  if (batch.length > 0) yield batch;
}
