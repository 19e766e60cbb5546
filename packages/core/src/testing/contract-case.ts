/**
 * One test of a contract suite. `run` throws (an `expect` failure) when the implementation
 * breaks the contract. The suites register each case with `it()`; their own tests run a case
 * directly against a deliberately broken implementation, to show that the case can fail.
 */
export interface ContractCase<Context> {
  readonly name: string;
  /** What the implementer must supply for the case to run (an optional hook); skipped without it. */
  readonly needs?: string;
  readonly run: (context: Context) => Promise<void>;
}

/** The case called `name`; throws for a name no case has, so that a renamed case is noticed. */
export function findCase<Context>(
  cases: readonly ContractCase<Context>[],
  name: string,
): ContractCase<Context> {
  const found = cases.find((contractCase) => contractCase.name === name);
  if (!found) throw new Error(`No contract case is called ${JSON.stringify(name)}`);
  return found;
}
