/**
 * The guest's serial console, served by the launcher. libvirt binds a unix socket for serial port 0;
 * the launcher is its one client for the whole life of the guest, keeps the last `ringBytes` of
 * output, optionally appends everything to a log file, and serves its own unix socket:
 *
 *   - a client first receives the ring buffer (the most recent output, up to 1 MiB by default),
 *     then live output; bytes it sends go to the guest's serial port (raw, no framing);
 *   - any number of clients at once: all see the same output, all may type, a new client does
 *     not disconnect anyone;
 *   - a client that stops reading is dropped once `maxClientBacklog` bytes wait for it, so it can
 *     never stall the guest or the other clients (it can reconnect and gets the replay).
 */

import { createWriteStream, type WriteStream } from 'node:fs';
import { chmod, rm } from 'node:fs/promises';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { ErrorCode, FerryError } from '../src/errors.js';
import type { Logger } from '../src/logging.js';

export const CONSOLE_RING_BYTES = 1024 * 1024;
export const CONSOLE_MAX_CLIENT_BACKLOG = 4 * 1024 * 1024;

/** A fixed-capacity byte ring: keeps the newest `capacity` bytes ever pushed. */
export class RingBuffer {
  private readonly buf: Buffer;
  private start = 0;
  private length = 0;
  private pushed = 0;

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity <= 0) throw new RangeError('capacity must be a positive integer');
    this.buf = Buffer.alloc(capacity);
  }

  /** Bytes held now (≤ capacity). */
  get size(): number {
    return this.length;
  }

  /** Bytes pushed since creation, including those overwritten. */
  get total(): number {
    return this.pushed;
  }

  push(chunk: Uint8Array): void {
    this.pushed += chunk.length;
    let data = chunk;
    if (data.length >= this.capacity) {
      data = data.subarray(data.length - this.capacity);
      this.buf.set(data, 0);
      this.start = 0;
      this.length = this.capacity;
      return;
    }
    const end = (this.start + this.length) % this.capacity;
    const first = Math.min(data.length, this.capacity - end);
    this.buf.set(data.subarray(0, first), end);
    this.buf.set(data.subarray(first), 0);
    const overflow = this.length + data.length - this.capacity;
    if (overflow > 0) {
      this.start = (this.start + overflow) % this.capacity;
      this.length = this.capacity;
    } else {
      this.length += data.length;
    }
  }

  /** The held bytes, oldest first (a copy). */
  snapshot(): Buffer {
    const firstLen = Math.min(this.length, this.capacity - this.start);
    return Buffer.concat([this.buf.subarray(this.start, this.start + firstLen), this.buf.subarray(0, this.length - firstLen)]);
  }
}

export interface ConsoleOptions {
  /** libvirt's serial socket (bound by QEMU). */
  readonly guestSocket: string;
  /** The launcher's socket for clients. */
  readonly listenPath: string;
  readonly logFile?: string;
  readonly ringBytes?: number;
  readonly maxClientBacklog?: number;
  /** How long to wait for the guest socket to accept a connection. */
  readonly connectTimeoutMs?: number;
  readonly logger: Logger;
}

export class GuestConsole {
  readonly ring: RingBuffer;
  private readonly clients = new Set<Socket>();
  private guest: Socket | undefined;
  private log: WriteStream | undefined;
  private server: Server | undefined;
  private readonly listeners = new Set<(chunk: Buffer) => void>();

  private constructor(private readonly options: ConsoleOptions) {
    this.ring = new RingBuffer(options.ringBytes ?? CONSOLE_RING_BYTES);
  }

  /** Starts serving clients at once; the guest side is attached with `connectGuest`. */
  static async listen(options: ConsoleOptions): Promise<GuestConsole> {
    const served = new GuestConsole(options);
    if (options.logFile) served.log = createWriteStream(options.logFile, { flags: 'a' });
    await rm(options.listenPath, { force: true });
    const server = createServer((client) => served.addClient(client));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.listenPath, () => resolve());
    });
    await chmod(options.listenPath, 0o600);
    served.server = server;
    return served;
  }

  get clientCount(): number {
    return this.clients.size;
  }

  /** Calls `fn` with every chunk of guest output. */
  onOutput(fn: (chunk: Buffer) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Connects to the guest's serial socket, retrying (bounded) until QEMU accepts. */
  async connectGuest(): Promise<void> {
    const deadline = Date.now() + (this.options.connectTimeoutMs ?? 10_000);
    let lastError: Error | undefined;
    while (Date.now() < deadline) {
      try {
        this.guest = await connect(this.options.guestSocket);
        break;
      } catch (err) {
        lastError = err as Error;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    const guest = this.guest;
    if (!guest) {
      throw new FerryError(ErrorCode.Internal, `cannot connect to the guest's serial console ${this.options.guestSocket}: ${lastError?.message ?? 'timeout'}`);
    }
    guest.on('data', (chunk: Buffer) => this.output(chunk));
    guest.on('error', (err) => this.options.logger.warn({ err: err.message }, 'serial console connection failed'));
    guest.on('close', () => {
      this.guest = undefined;
    });
  }

  private output(chunk: Buffer): void {
    this.ring.push(chunk);
    this.log?.write(chunk);
    for (const fn of this.listeners) fn(chunk);
    const limit = this.options.maxClientBacklog ?? CONSOLE_MAX_CLIENT_BACKLOG;
    for (const client of this.clients) {
      if (client.writableLength > limit) {
        this.options.logger.warn({ backlog: client.writableLength }, 'console client does not read; disconnecting it');
        client.destroy();
        continue;
      }
      client.write(chunk);
    }
  }

  private addClient(client: Socket): void {
    this.clients.add(client);
    client.on('close', () => this.clients.delete(client));
    client.on('error', () => client.destroy());
    client.on('data', (input: Buffer) => this.guest?.write(input));
    const replay = this.ring.snapshot();
    if (replay.length > 0) client.write(replay);
  }

  /** Closes the clients, the guest connection, the socket and the log file. */
  async close(): Promise<void> {
    for (const client of this.clients) client.end();
    this.guest?.destroy();
    if (this.server) {
      const server = this.server;
      await new Promise<void>((resolve) => server.close(() => resolve()));
      for (const client of this.clients) client.destroy();
    }
    if (this.log) {
      const log = this.log;
      await new Promise<void>((resolve) => log.end(() => resolve()));
    }
    await rm(this.options.listenPath, { force: true });
  }
}

function connect(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = createConnection(path);
    socket.once('connect', () => {
      socket.removeListener('error', reject);
      resolve(socket);
    });
    socket.once('error', reject);
  });
}

/** Ctrl-] ends an interactive console session, as in virsh and virtctl. */
export const ESCAPE_BYTE = 0x1d;

export interface AttachOptions {
  readonly socketPath: string;
  readonly stdin: NodeJS.ReadableStream & { isTTY?: boolean; setRawMode?: (raw: boolean) => unknown };
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
}

/**
 * `ferry console --socket PATH`: copies the console to stdout and stdin to the console until the
 * launcher closes it (the guest ended) or, on a terminal, Ctrl-] is typed. Returns an exit code.
 */
export async function attachConsole(options: AttachOptions): Promise<number> {
  let socket: Socket;
  try {
    socket = await connect(options.socketPath);
  } catch (err) {
    options.stderr.write(`error INTERNAL: cannot connect to the console ${options.socketPath}: ${(err as Error).message}\n`);
    return 1;
  }
  const tty = options.stdin.isTTY === true && typeof options.stdin.setRawMode === 'function';
  if (tty) {
    options.stdin.setRawMode!(true);
    options.stderr.write('Connected to the serial console; escape character is ^]\r\n');
  }
  return new Promise<number>((resolve) => {
    const finish = (code: number) => {
      if (tty) options.stdin.setRawMode!(false);
      options.stdin.removeListener('data', onInput);
      options.stdin.pause();
      socket.destroy();
      resolve(code);
    };
    const onInput = (data: Buffer) => {
      const escape = tty ? data.indexOf(ESCAPE_BYTE) : -1;
      if (escape >= 0) {
        if (escape > 0) socket.write(data.subarray(0, escape));
        finish(0);
        return;
      }
      socket.write(data);
    };
    options.stdin.on('data', onInput);
    socket.on('data', (chunk: Buffer) => options.stdout.write(chunk));
    socket.on('close', () => finish(0));
    socket.on('error', (err) => {
      options.stderr.write(`error INTERNAL: console connection failed: ${err.message}\n`);
      finish(1);
    });
  });
}
