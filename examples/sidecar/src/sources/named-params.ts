/** A query with `:name` placeholders compiled to PostgreSQL's positional `$n` form. */
export interface CompiledQuery {
  text: string;
  /** Param names in `$1, $2, ...` order; a name used twice maps to one `$n`. */
  names: string[];
  /** The query already had `$1`-style placeholders (which nothing would bind). */
  positional: boolean;
}

const IDENTIFIER_START = /[A-Za-z_]/;
const IDENTIFIER_PART = /[A-Za-z0-9_]/;

/**
 * Rewrites `:name` placeholders to `$1, $2, ...` so the values travel as bound parameters,
 * never as SQL text. String literals, quoted identifiers, comments, dollar-quoted bodies and
 * `::type` casts are left alone.
 *
 * @example
 * ```ts
 * compileNamedParams("select * from t where day >= :from::date and note <> ':x'")
 * // { text: "select * from t where day >= $1::date and note <> ':x'", names: ['from'], positional: false }
 * ```
 */
export function compileNamedParams(sql: string): CompiledQuery {
  const names: string[] = [];
  let positional = false;
  let text = '';
  let i = 0;
  const n = sql.length;
  const copyUntil = (end: number) => {
    text += sql.slice(i, end);
    i = end;
  };
  while (i < n) {
    const ch = sql[i]!;
    const next = sql[i + 1];
    if (ch === "'" || ch === '"') {
      // Quoted text ends at the next unpaired quote ('' and "" are escapes).
      let j = i + 1;
      while (j < n) {
        if (sql[j] === ch) {
          if (sql[j + 1] === ch) j += 2;
          else break;
        } else if (ch === "'" && sql[j] === '\\' && isEscapeString(sql, i)) j += 2;
        else j++;
      }
      copyUntil(Math.min(j + 1, n));
    } else if (ch === '-' && next === '-') {
      const end = sql.indexOf('\n', i);
      copyUntil(end === -1 ? n : end);
    } else if (ch === '/' && next === '*') {
      // Block comments nest in PostgreSQL.
      let depth = 1;
      let j = i + 2;
      while (j < n && depth > 0) {
        if (sql[j] === '/' && sql[j + 1] === '*') {
          depth++;
          j += 2;
        } else if (sql[j] === '*' && sql[j + 1] === '/') {
          depth--;
          j += 2;
        } else j++;
      }
      copyUntil(j);
    } else if (ch === '$' && !IDENTIFIER_PART.test(sql[i - 1] ?? ' ')) {
      const tag = /^\$([A-Za-z_][A-Za-z0-9_]*)?\$/.exec(sql.slice(i));
      if (tag) {
        const end = sql.indexOf(tag[0], i + tag[0].length);
        copyUntil(end === -1 ? n : end + tag[0].length);
      } else {
        if (next !== undefined && /[0-9]/.test(next)) positional = true;
        copyUntil(i + 1);
      }
    } else if (ch === ':' && next === ':') {
      copyUntil(i + 2);
    } else if (ch === ':' && next !== undefined && IDENTIFIER_START.test(next) && sql[i - 1] !== ':') {
      let j = i + 1;
      while (j < n && IDENTIFIER_PART.test(sql[j]!)) j++;
      const name = sql.slice(i + 1, j);
      let index = names.indexOf(name);
      if (index === -1) index = names.push(name) - 1;
      text += `$${index + 1}`;
      i = j;
    } else {
      copyUntil(i + 1);
    }
  }
  return { text, names, positional };
}

/** `E'...'` strings take backslash escapes. */
function isEscapeString(sql: string, quoteIndex: number): boolean {
  const before = sql[quoteIndex - 1];
  return (before === 'E' || before === 'e') && !IDENTIFIER_PART.test(sql[quoteIndex - 2] ?? ' ');
}
