// Type tests: `expectTypeOf` and the `@ts-expect-error` lines are checked by
// `tsc -p tsconfig.json --noEmit` (part of `npm test`); at run time they only define datasets.
import { describe, expect, expectTypeOf, it } from 'vitest';
import {
  type Dataset,
  type DatasetDefinition,
  defineDataset,
  ExportManager,
  type ParamSpec,
  type Params,
} from '../src/index.js';

describe('dataset params are typed from their spec', () => {
  it('gives each param the type its spec declares, without `as const`', () => {
    const orders = defineDataset('orders', {
      params: {
        from: { type: 'date', required: true },
        n: { type: 'integer' },
        limit: { type: 'integer', default: 100 },
        ratio: { type: 'number' },
        open: { type: 'boolean' },
        region: { type: 'enum', values: ['eu', 'us'], required: true },
        note: { type: 'string' },
      },
      source: (params) => {
        expectTypeOf(params.from).toEqualTypeOf<string>();
        expectTypeOf(params.n).toEqualTypeOf<number | undefined>();
        expectTypeOf(params.limit).toEqualTypeOf<number>();
        expectTypeOf(params.ratio).toEqualTypeOf<number | undefined>();
        expectTypeOf(params.open).toEqualTypeOf<boolean | undefined>();
        expectTypeOf(params.region).toEqualTypeOf<'eu' | 'us'>();
        expectTypeOf(params.note).toEqualTypeOf<string | undefined>();
        // @ts-expect-error: `nope` is not a declared param
        void params.nope;
        return [{ from: params.from, n: params.n ?? 0 }];
      },
      count: (params) => {
        expectTypeOf(params.limit).toEqualTypeOf<number>();
        // @ts-expect-error: `nope` is not a declared param
        void params.nope;
        return params.limit;
      },
    });
    // The result is a plain Dataset, as the manager keeps every dataset.
    expectTypeOf(orders).toEqualTypeOf<Dataset>();
  });

  it('infers from params written after source, too', () => {
    defineDataset('late', {
      source: (params) => {
        expectTypeOf(params.at).toEqualTypeOf<string | undefined>();
        return [];
      },
      params: { at: { type: 'date' } },
    });
  });

  it('accepts no params where none are declared', () => {
    defineDataset('plain', {
      source: (params) => {
        // @ts-expect-error: the dataset declares no params
        void params.anything;
        return [];
      },
    });
  });

  it('rejects a spec that is not a param spec', () => {
    expect(() =>
      defineDataset('bad', {
        // @ts-expect-error: `datetime` is not a param type
        params: { at: { type: 'datetime' } },
        source: () => [],
      }),
    ).toThrow(TypeError);
  });

  it('keeps specs known only as ParamSpec (a config file) loosely typed as Params', () => {
    const specs: Record<string, ParamSpec> = { from: { type: 'date' } };
    const definition: DatasetDefinition = {
      params: specs,
      source: (params) => {
        expectTypeOf(params).toEqualTypeOf<Params>();
        return [];
      },
    };
    defineDataset('loose', definition);
  });

  it('types ExportManager.defineDataset the same way, and typed datasets fit the datasets option', () => {
    const typed = defineDataset('typed', {
      params: { n: { type: 'integer', required: true } },
      source: (params) => [{ n: params.n }],
    });
    const manager = new ExportManager({ metrics: false, datasets: [typed] });
    const defined = manager.defineDataset('more', {
      params: { day: { type: 'date', default: '2025-01-01' } },
      source: (params) => {
        expectTypeOf(params.day).toEqualTypeOf<string>();
        // @ts-expect-error: `nope` is not a declared param
        void params.nope;
        return [];
      },
    });
    expectTypeOf(defined).toEqualTypeOf<Dataset>();
    // The `datasets` option by name still takes plain definitions.
    new ExportManager({
      metrics: false,
      datasets: { byName: { params: { n: { type: 'integer' } }, source: (params) => [{ n: params.n }] } },
    });
    void manager.close();
  });
});
