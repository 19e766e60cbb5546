import { banner } from './banner.js';
import { ConfigError } from './config.js';
import { createLogger, type Logger } from './logging.js';
import { loadSidecarSetup, PREFIX, type Sidecar, startSidecar } from './sidecar.js';

/**
 * `npm start` / `spark-export serve`: the sidecar on `HOST:PORT` until SIGTERM or SIGINT.
 * The first signal drains (status 503 `draining`, new exports 503, running ones get
 * `EXPORT_DRAIN_TIMEOUT_MS`) and exits 0; a second signal exits at once.
 */
export async function serve(): Promise<void> {
  let setup: Awaited<ReturnType<typeof loadSidecarSetup>>;
  try {
    setup = await loadSidecarSetup();
  } catch (error) {
    fail(createLogger('info'), error);
  }
  const logger = createLogger(setup.settings.logLevel);
  let sidecar: Sidecar;
  try {
    sidecar = await startSidecar({ ...setup, logger });
  } catch (error) {
    fail(logger, error);
  }
  process.stderr.write(
    banner({
      origin: sidecar.origin,
      prefix: PREFIX,
      datasets: sidecar.datasets.datasets,
      auth: setup.settings.apiToken !== undefined,
      ownerHeader: setup.settings.ownerHeader,
      configLabel: setup.config.file ? `config ${setup.config.file}` : 'built-in demo config',
    }),
  );

  let stopping = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) {
      logger.warn({ event: 'exit', signal }, 'second signal: exiting now');
      process.exit(signal === 'SIGINT' ? 130 : 143);
    }
    stopping = true;
    logger.info({ event: 'signal', signal }, 'shutting down');
    sidecar.close().then(
      () => process.exit(0),
      (error: unknown) => {
        logger.error({ err: error }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}

/** Start-up failures: one JSON log line for the log pipeline, plain text on stderr for people. */
function fail(logger: Logger, error: unknown): never {
  const message = error instanceof Error ? error.message : String(error);
  if (error instanceof ConfigError) {
    logger.fatal({ event: 'config:invalid', problems: error.problems }, message);
  } else {
    logger.fatal({ event: 'start:failed', err: error }, message);
  }
  process.stderr.write(`spark-export: ${message}\n`);
  process.exit(1);
}
