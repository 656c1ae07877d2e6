/**
 * The signing thread's module (a Deno Worker started by rsa_sign.ts `threadSigner`): answers
 * each `{ id, data, pem }` with `{ id, sig }` (the signature's buffer transferred) or
 * `{ id, error }`, signing synchronously with libcrypto. The first message is `{ paths? }`
 * (where to look for libcrypto); the thread answers it with `{ ready: true }` or
 * `{ ready: false, error }` (libcrypto did not load).
 */
import { openSslSigner, type RsaSigner } from "./rsa_sign.ts";

interface Start {
  paths?: readonly string[];
}
interface Job {
  id: number;
  data: Uint8Array;
  pem: string;
}

const scope = self as unknown as {
  onmessage: ((e: MessageEvent<Start | Job>) => void) | null;
  postMessage(message: unknown, transfer?: Transferable[]): void;
};
let signer: RsaSigner | null = null;

scope.onmessage = async (e) => {
  if (!signer) {
    const start = e.data as Start;
    try {
      signer = openSslSigner({ nonblocking: false, paths: start.paths });
    } catch (err) {
      scope.postMessage({ ready: false, error: err instanceof Error ? err.message : String(err) });
      return;
    }
    scope.postMessage({ ready: true });
    return;
  }
  const { id, data, pem } = e.data as Job;
  try {
    const sig = await signer.sign(data, pem);
    // A fresh buffer of its own (signer.sign's is a subarray of one): transferred, not copied.
    const own = sig.slice();
    scope.postMessage({ id, sig: own }, [own.buffer]);
  } catch (err) {
    scope.postMessage({ id, error: err instanceof Error ? err.message : String(err) });
  }
};
