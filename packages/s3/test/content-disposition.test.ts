import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
// Core keeps its own function off its public surface; the copy here must say the same.
import { attachmentDisposition as coreAttachmentDisposition } from '../../core/src/http/download.js';
import { attachmentDisposition } from '../src/content-disposition.js';

describe('attachmentDisposition', () => {
  it('says what the core’s HTTP handler says, for any file name', () => {
    const names = fc.oneof(
      fc.string({ unit: 'binary' }),
      fc.string({
        unit: fc.constantFrom('a', ' ', '.', '%', '"', '\\', '/', 'ü', '＂', '／', '＼', '\r', '€', '(', '*'),
      }),
    );
    fc.assert(
      fc.property(names, (name) => {
        expect(attachmentDisposition(name)).toBe(coreAttachmentDisposition(name));
      }),
      { numRuns: 2000 },
    );
  });

  it('keeps a plain ASCII name as it is and adds the UTF-8 name when it differs', () => {
    expect(attachmentDisposition('orders.csv')).toBe('attachment; filename="orders.csv"');
    expect(attachmentDisposition('Bestellungen ü (1).csv')).toBe(
      `attachment; filename="Bestellungen u (1).csv"; filename*=UTF-8''Bestellungen%20%C3%BC%20%281%29.csv`,
    );
  });
});
