// A webhook receiver on loopback, as a host app would write one: it verifies every request
// with standardwebhooks' own verifier, deduplicates by webhook-id, and answers as the test
// scripts it (a status, or no answer at all, to make the sender time out).
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Webhook } from 'standardwebhooks';
import type { WebhookPayload } from '../src/notifications/webhook-notifier.js';

/** What the receiver does with a request: answer with a status, or never answer. */
export type Answer = number | 'hang';

export interface ReceivedWebhook {
  id: string;
  timestamp: string;
  signature: string;
  body: string;
  payload: WebhookPayload;
}

export class WebhookReceiver {
  readonly server: Server;
  /** Every request that passed verification, in arrival order (duplicates included). */
  readonly received: ReceivedWebhook[] = [];
  /** Events processed once each, by webhook-id: what a receiver acts on. */
  readonly processed = new Map<string, WebhookPayload>();
  /** Requests whose signature did not verify (answered 400). */
  rejected = 0;
  /** Answers for the next requests, in order; then `fallback`. */
  readonly script: Answer[] = [];
  fallback: Answer = 204;
  readonly #verifiers: Webhook[];
  readonly #hanging = new Set<ServerResponse>();
  readonly #waiters: { count: number; resolve: () => void }[] = [];

  private constructor(secrets: readonly string[]) {
    this.#verifiers = secrets.map((secret) => new Webhook(secret));
    this.server = createServer((request, response) => void this.#handle(request, response));
  }

  /** Starts a receiver that accepts only requests every one of `secrets` verifies. */
  static async start(secrets: readonly string[]): Promise<WebhookReceiver> {
    const receiver = new WebhookReceiver(secrets);
    receiver.server.listen(0, '127.0.0.1');
    await once(receiver.server, 'listening');
    return receiver;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/hooks`;
  }

  /** Resolves once `count` verified requests have arrived in all. */
  requests(count: number): Promise<void> {
    if (this.received.length >= count) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push({ count, resolve }));
  }

  async close(): Promise<void> {
    for (const response of this.#hanging) response.destroy();
    this.server.closeAllConnections();
    this.server.close();
    await once(this.server, 'close');
  }

  async #handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks).toString('utf8');
    const headers = {
      'webhook-id': String(request.headers['webhook-id'] ?? ''),
      'webhook-timestamp': String(request.headers['webhook-timestamp'] ?? ''),
      'webhook-signature': String(request.headers['webhook-signature'] ?? ''),
    };
    let payload: WebhookPayload;
    try {
      payload = this.#verifiers.map((verifier) => verifier.verify(body, headers))[0] as WebhookPayload;
    } catch {
      this.rejected++;
      response.writeHead(400).end();
      return;
    }
    this.received.push({
      id: headers['webhook-id'],
      timestamp: headers['webhook-timestamp'],
      signature: headers['webhook-signature'],
      body,
      payload,
    });
    for (const waiter of [...this.#waiters]) {
      if (this.received.length < waiter.count) continue;
      this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
      waiter.resolve();
    }
    const answer = this.script.shift() ?? this.fallback;
    // A 2xx is a processed event, and so is one that hangs: it was acted on, but its answer is
    // too slow, so the sender tries again and the receiver must not act twice.
    const processes = answer === 'hang' || (answer >= 200 && answer < 300);
    if (processes && !this.processed.has(headers['webhook-id'])) {
      this.processed.set(headers['webhook-id'], payload);
    }
    if (answer === 'hang') {
      this.#hanging.add(response);
      return;
    }
    response.writeHead(answer).end();
  }
}
