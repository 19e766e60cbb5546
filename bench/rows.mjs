// The rows of the benchmarks: bench/formats.mjs's 7 columns and seeded generator (the same
// rows for the same count), for the benchmarks that import them.

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
