// The cost of writing dates in a time zone: @spark-export/core's createDateRenderer against
// `Date#toISOString()` (what a UTC export does) and against asking Intl for every value
// (`formatToParts`, `format`). See bench/README.md; docs/benchmarks.md quotes its output.
//
//   node bench/dates.mjs                 1M instants x 5 rounds, variants interleaved
//   node bench/dates.mjs --quick         100k instants, 1 round (smoke)
//
// One process: every variant formats the same seeded instants (spread over two years, so the
// renderer's hour cache misses as it would on real data), in an order rotated each round;
// the table gives medians of wall time and of CPU time (user + system) per date. The two
// per-value Intl variants format the first tenth of the instants only: they are an order of
// magnitude slower, and a per-date cost needs no million of them.

import { fileURLToPath } from 'node:url';

const DIST = fileURLToPath(new URL('../packages/core/dist/index.js', import.meta.url));
const { createDateRenderer } = await import(DIST);

const quick = process.argv.includes('--quick');
const COUNT = quick ? 100_000 : 1_000_000;
const ROUNDS = quick ? 1 : 5;
const ZONE = 'Europe/Berlin';

/** mulberry32: the same instants in every run. */
function seeded(seed) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const random = seeded(42);
const start = Date.UTC(2024, 0, 1);
const span = 2 * 365 * 24 * 3_600_000;
const instants = Array.from({ length: COUNT }, () => new Date(start + Math.floor(random() * span)));

const parts = new Intl.DateTimeFormat('en-US', {
  timeZone: ZONE,
  year: 'numeric',
  month: '2-digit',
  day: '2-digit',
  hour: '2-digit',
  minute: '2-digit',
  second: '2-digit',
  hourCycle: 'h23',
  timeZoneName: 'longOffset',
});
const swedish = new Intl.DateTimeFormat('sv-SE', {
  timeZone: ZONE,
  year: 'numeric',
  month: '2-digit',
  day: '2-digit',
  hour: '2-digit',
  minute: '2-digit',
  second: '2-digit',
  hourCycle: 'h23',
});

const VARIANTS = {
  'toISOString (UTC, the baseline)': (date) => date.toISOString(),
  'renderer UTC iso': createDateRenderer(),
  [`renderer ${ZONE} iso`]: createDateRenderer({ timeZone: ZONE }),
  [`renderer ${ZONE} iso-local`]: createDateRenderer({ timeZone: ZONE, dateFormat: 'iso-local' }),
  [`renderer ${ZONE} date`]: createDateRenderer({ timeZone: ZONE, dateFormat: 'date' }),
  // The obvious hand-written way: one Intl call per value.
  [`Intl formatToParts per value (${ZONE} iso)`]: (date) => {
    const p = {};
    for (const part of parts.formatToParts(date)) p[part.type] = part.value;
    const offset = p.timeZoneName === 'GMT' ? '+00:00' : p.timeZoneName.slice(3);
    return `${p.year}-${p.month}-${p.day}T${p.hour}:${p.minute}:${p.second}.${String(date.getUTCMilliseconds()).padStart(3, '0')}${offset}`;
  },
  [`Intl format per value (${ZONE} iso-local, sv-SE)`]: (date) => swedish.format(date),
};

const SAMPLED = new Set(Object.keys(VARIANTS).filter((name) => name.startsWith('Intl')));

function measure(name) {
  const render = VARIANTS[name];
  const count = SAMPLED.has(name) ? Math.floor(instants.length / 10) : instants.length;
  const cpu = process.cpuUsage();
  const began = performance.now();
  let length = 0;
  for (let index = 0; index < count; index++) length += render(instants[index]).length;
  const wallMs = performance.now() - began;
  const used = process.cpuUsage(cpu);
  return { wallNs: (wallMs * 1e6) / count, cpuNs: ((used.user + used.system) * 1000) / count, length };
}

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
};

const names = Object.keys(VARIANTS);
const results = Object.fromEntries(names.map((name) => [name, { wall: [], cpu: [] }]));
// A warm-up pass, so that the first variant does not pay for everyone's JIT.
for (const name of names) measure(name);
for (let round = 0; round < ROUNDS; round++) {
  const order = names.map((_, index) => names[(index + round) % names.length]);
  for (const name of order) {
    const { wallNs, cpuNs } = measure(name);
    results[name].wall.push(wallNs);
    results[name].cpu.push(cpuNs);
  }
}

const baselineWall = median(results[names[0]].wall);
const baselineCpu = median(results[names[0]].cpu);
console.log(
  `${COUNT.toLocaleString('en')} instants over two years, ${ROUNDS} round(s), Node ${process.version}, ${process.platform} ${process.arch}`,
);
console.log(
  '| variant | ns per date (wall) | ns per date (CPU) | vs toISOString (wall) | vs toISOString (CPU) |',
);
console.log('|---|---|---|---|---|');
for (const name of names) {
  const wall = median(results[name].wall);
  const cpu = median(results[name].cpu);
  console.log(
    `| ${name} | ${Math.round(wall)} | ${Math.round(cpu)} | ${(wall / baselineWall).toFixed(2)}x | ${(cpu / baselineCpu).toFixed(2)}x |`,
  );
}
