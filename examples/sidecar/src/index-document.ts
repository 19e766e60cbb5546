/**
 * What `GET /export` answers: the URL the start-up banner prints, so it must not be a 404. The
 * sidecar serves it itself (the core's handler has no route for its prefix root): links to the
 * API's entry points, and where the API is described (paths in the spark-export repository).
 */
export function indexDocument(prefix: string, options: { ui?: boolean } = {}) {
  return {
    service: 'spark-export-sidecar',
    links: {
      status: `${prefix}/status`,
      datasets: `${prefix}/datasets`,
      jobs: `${prefix}/jobs`,
      stream: `${prefix}/stream/{dataset}`,
      metrics: `${prefix}/metrics`,
      ...(options.ui ? { ui: `${prefix}/ui` } : {}),
    },
    docs: {
      httpApi: 'docs/http-api.md',
      openapi: 'docs/openapi.yaml',
      sidecar: 'docs/sidecar.md',
    },
  };
}
