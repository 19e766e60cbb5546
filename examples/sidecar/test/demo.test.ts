import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { seedDemoDatabase } from '../src/demo.js';
import { removeDir, tempDir } from './helpers.js';

/** The pid of a process that has exited. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' });
  await once(child, 'exit');
  return child.pid!;
}

describe('seedDemoDatabase', () => {
  let dir: string;
  beforeAll(() => {
    dir = tempDir();
  });
  afterAll(() => removeDir(dir));

  it("removes what interrupted seeds of dead processes left, and keeps a live process's", async () => {
    const data = join(dir, 'data');
    mkdirSync(data);
    const dead = await deadPid();
    // The test runner's parent is alive and could be seeding right now.
    const live = process.ppid;
    const leftovers = [
      `demo.sqlite.seeding-${dead}`,
      `demo.sqlite.seeding-${dead}-journal`,
      `demo.sqlite.seeding-${process.pid}`,
    ];
    const seeding = [`demo.sqlite.seeding-${live}`, `demo.sqlite.seeding-${live}-journal`];
    for (const name of [...leftovers, ...seeding, 'notes.txt']) writeFileSync(join(data, name), 'x');

    expect(seedDemoDatabase(join(data, 'demo.sqlite'), { orders: 20, customers: 5 })).toBe(true);
    expect(readdirSync(data).sort()).toEqual(['demo.sqlite', 'notes.txt', ...seeding].sort());
    const db = new Database(join(data, 'demo.sqlite'), { readonly: true });
    expect(db.prepare('SELECT count(*) FROM orders').pluck().get()).toBe(20);
    db.close();

    // Also on a start that finds the database already seeded.
    writeFileSync(join(data, `demo.sqlite.seeding-${dead}`), 'x');
    expect(seedDemoDatabase(join(data, 'demo.sqlite'))).toBe(false);
    expect(existsSync(join(data, `demo.sqlite.seeding-${dead}`))).toBe(false);
  });
});
