// `koa2` (npm alias of koa@2, devDependencies) for the Koa 2 contract test, typed loosely with
// the Koa 3 types of this workspace: the test only uses what both majors share (`new Koa()`,
// `silent`, `use`, `callback`).
declare module 'koa2' {
  import Koa from 'koa';
  export default Koa;
}
