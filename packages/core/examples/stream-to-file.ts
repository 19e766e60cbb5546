import { createWriteStream } from 'node:fs';
import { ExportManager } from '@spark-export/core';

export async function main(outputPath = 'orders.csv') {
  const manager = new ExportManager({ maxConcurrent: 5 });
  manager.defineDataset('orders', {
    columns: [{ name: 'id' }, { name: 'total', label: 'Total (EUR)' }],
    params: { limit: { type: 'integer', min: 1, default: 3 } },
    // Any async iterable works: a DB cursor, fromJsonArray(upstreamBody), a generator.
    async *source(params) {
      for (let id = 1; id <= Number(params.limit); id++) yield { id, total: id * 9.5 };
    },
  });
  const request = { dataset: 'orders', format: 'csv', params: { limit: '5' } } as const;
  const { rows, bytes } = await manager.stream(request, createWriteStream(outputPath));
  console.log(`Wrote ${rows} rows (${bytes} bytes) to ${outputPath}`);
}
