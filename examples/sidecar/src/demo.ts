import { mkdirSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import Database from 'better-sqlite3';
import type { SidecarConfig } from './config.js';

export const DEMO_ORDERS = 1_000_000;
export const DEMO_CUSTOMERS = 10_000;
const STATUSES = ['paid', 'pending', 'refunded', 'cancelled'];
const COUNTRIES = ['DE', 'FR', 'GB', 'NL', 'US', 'BR', 'IN', 'JP'];

const ORDERS_WHERE = [
  'WHERE (:from IS NULL OR julianday(created_at) >= julianday(:from))',
  '  AND (:to IS NULL OR julianday(created_at) < julianday(:to))',
  '  AND (:status IS NULL OR status = :status)',
  '  AND (:min_total IS NULL OR total >= :min_total)',
].join('\n');
const CUSTOMERS_WHERE = 'WHERE (:country IS NULL OR country = :country)';

/**
 * The built-in configuration used when there is no config file: two datasets over a SQLite
 * database that is created and seeded on first start, so `npm start` works on a fresh machine.
 */
export function demoConfig(): SidecarConfig {
  return {
    demo: { database: './data/demo.sqlite', orders: DEMO_ORDERS, customers: DEMO_CUSTOMERS },
    datasets: {
      orders: {
        description: 'Demo orders (1,000,000 rows from 2024-01-01 to 2025-12-30), oldest first.',
        columns: [
          { name: 'id', label: 'Order ID', type: 'integer' },
          { name: 'customer_id', label: 'Customer ID', type: 'integer' },
          { name: 'status', label: 'Status', type: 'string' },
          { name: 'total', label: 'Total', type: 'number' },
          { name: 'currency', label: 'Currency', type: 'string' },
          { name: 'created_at', label: 'Created at', type: 'date' },
        ],
        params: {
          from: { type: 'date', description: 'Orders created at or after this date' },
          to: { type: 'date', description: 'Orders created before this date' },
          status: { type: 'enum', values: STATUSES, description: 'Only orders with this status' },
          min_total: { type: 'number', min: 0, description: 'Only orders with at least this total' },
        },
        source: {
          type: 'sqlite',
          database: './data/demo.sqlite',
          // created_at is text like 2025-01-01T00:00:09Z; the params arrive as a day (2025-01-01)
          // or a UTC instant with milliseconds (2025-01-01T12:00:00.000Z). Text comparison would
          // get sub-second bounds wrong ("...:09Z" sorts after "...:09.500Z"), so both sides are
          // compared as julian days. The OR-NULL pattern keeps the index out of use either way.
          query: [
            'SELECT id, customer_id, status, total, currency, created_at FROM orders',
            ORDERS_WHERE,
            'ORDER BY id',
          ].join('\n'),
          // The total behind the CLI's percentage and the jobs' progress.totalRows.
          countQuery: `SELECT count(*) FROM orders\n${ORDERS_WHERE}`,
        },
      },
      customers: {
        description: 'Demo customers (10,000 rows).',
        columns: [
          { name: 'id', label: 'Customer ID', type: 'integer' },
          { name: 'name', label: 'Name', type: 'string' },
          { name: 'email', label: 'Email', type: 'string' },
          { name: 'country', label: 'Country', type: 'string' },
          { name: 'created_at', label: 'Created at', type: 'date' },
        ],
        params: {
          country: { type: 'enum', values: COUNTRIES, description: 'Only customers from this country' },
        },
        source: {
          type: 'sqlite',
          database: './data/demo.sqlite',
          query: `SELECT id, name, email, country, created_at FROM customers ${CUSTOMERS_WHERE} ORDER BY id`,
          countQuery: `SELECT count(*) FROM customers ${CUSTOMERS_WHERE}`,
        },
      },
    },
  };
}

/**
 * Creates and seeds the demo database unless the file exists. Deterministic: row `i` is a pure
 * function of `i`, so every fresh machine gets the same data. Written to a temporary file and
 * renamed, so an interrupted seed never leaves a half-filled database behind. Returns whether
 * it seeded.
 */
export function seedDemoDatabase(
  file: string,
  counts: { orders?: number | undefined; customers?: number | undefined } = {},
): boolean {
  removeAbandonedSeeds(file);
  if (exists(file)) return false;
  const orders = counts.orders ?? DEMO_ORDERS;
  const customers = counts.customers ?? DEMO_CUSTOMERS;
  mkdirSync(dirname(file), { recursive: true });
  const temporary = `${file}.seeding-${process.pid}`;
  rmSync(temporary, { force: true });
  const db = new Database(temporary);
  try {
    db.pragma('journal_mode = OFF');
    db.pragma('synchronous = OFF');
    const countries = COUNTRIES.map((country, index) => `WHEN ${index} THEN '${country}'`).join(' ');
    db.exec(`
      CREATE TABLE customers (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        email TEXT NOT NULL,
        country TEXT NOT NULL,
        created_at TEXT NOT NULL
      );
      CREATE TABLE orders (
        id INTEGER PRIMARY KEY,
        customer_id INTEGER NOT NULL REFERENCES customers(id),
        status TEXT NOT NULL,
        total REAL NOT NULL,
        currency TEXT NOT NULL,
        created_at TEXT NOT NULL
      );
    `);
    db.transaction(() => {
      db.prepare(`
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :customers)
        INSERT INTO customers
        SELECT i, 'Customer ' || i, 'customer' || i || '@example.com',
               CASE (i * 7) % ${COUNTRIES.length} ${countries} END,
               strftime('%Y-%m-%dT%H:%M:%SZ', 1672531200 + i * 3000, 'unixepoch')
        FROM n
      `).run({ customers });
      // Orders are spread evenly over 2024-01-01 .. 2025-12-30, in id order.
      if (orders === 0) return;
      const step = Math.max(1, Math.floor(63_072_000 / orders));
      db.prepare(`
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :orders)
        INSERT INTO orders
        SELECT i, (i * 7919) % :customers + 1,
               CASE (i * 31) % 10 WHEN 0 THEN 'cancelled' WHEN 1 THEN 'refunded' WHEN 2 THEN 'pending' WHEN 3 THEN 'pending' ELSE 'paid' END,
               ((i * 2654435761) % 99500 + 500) / 100.0, 'EUR',
               strftime('%Y-%m-%dT%H:%M:%SZ', 1704067200 + i * :step, 'unixepoch')
        FROM n
      `).run({ orders, customers, step });
    })();
    db.exec('CREATE INDEX orders_created_at ON orders(created_at)');
  } catch (error) {
    db.close();
    rmSync(temporary, { force: true });
    throw error;
  }
  db.close();
  renameSync(temporary, file);
  return true;
}

function exists(file: string): boolean {
  try {
    return statSync(file).isFile();
  } catch {
    return false;
  }
}

/**
 * Removes what interrupted seeds left behind: `<file>.seeding-<pid>` and its SQLite side files
 * (`-journal`, `-wal`, `-shm`), but only those of processes that are gone. A live process may
 * be seeding right now (two starts at once); this process's own pid is stale by definition (a
 * container's node is pid 1 on every start).
 */
export function removeAbandonedSeeds(file: string): string[] {
  const prefix = `${basename(file)}.seeding-`;
  let names: string[];
  try {
    names = readdirSync(dirname(file));
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const name of names) {
    if (!name.startsWith(prefix)) continue;
    const match = /^([1-9][0-9]*)(-journal|-wal|-shm)?$/.exec(name.slice(prefix.length));
    if (!match) continue;
    const pid = Number(match[1]);
    if (pid !== process.pid && isAlive(pid)) continue;
    rmSync(join(dirname(file), name), { force: true });
    removed.push(name);
  }
  return removed;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it exists, it is only someone else's.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
