/**
 * Answering an HTTP request before its body has all arrived (the upload server and the upload proxy
 * refuse bodies early): the answer goes out at once, the rest of the body is read and dropped, and
 * only then is the response ended. Ending first makes Node close or reset a connection the client is
 * still writing to, and the client sees a reset instead of the answer.
 */

import type { IncomingMessage, ServerResponse } from 'node:http';

/** Ends `res` once `req`'s body is read to its end (dropped), or cuts the connection after `limitMs`. */
export function endAfterBody(req: IncomingMessage, res: ServerResponse, limitMs = 10_000): void {
  if (req.readableEnded) {
    res.end();
    return;
  }
  const timer = setTimeout(() => req.socket.destroy(), limitMs);
  timer.unref();
  const finish = (): void => {
    clearTimeout(timer);
    res.end();
  };
  req.on('data', () => undefined);
  req.once('end', finish);
  req.once('close', finish);
  req.resume();
}
