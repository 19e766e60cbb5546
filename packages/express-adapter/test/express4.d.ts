// `express4` (npm alias of express@4, devDependencies) for the Express 4 contract test. It is
// typed loosely with the Express 5 types of this workspace: @types/express@4 next to them makes
// the adapter's Express 5 `Router` type unfit for an Express 4 `app.use`, a clash that only this
// test has (an Express 4 app's compiler resolves the adapter's `express` to its own types).
declare module 'express4' {
  import express from 'express';
  export default express;
}
