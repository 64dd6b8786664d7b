// node_blocked_loop: Node's main thread (the libuv event loop) blocked by a synchronous call
// from a timer callback, for the `stallwatch watch` verdict tests.
//
// A 20 ms interval ticks a few times (the loop cycles through epoll_wait), then a timeout's
// callback calls blockTheLoop(), which sleeps in Atomics.wait on a SharedArrayBuffer nobody
// notifies: the loop never polls again.
//
// Output (stdout): `pid <PID>`, `tid main <TID>` (the main thread is the process), then
// `BLOCKING` right before the wait. Options: --timeout-s N (default 120: the wait times out).
'use strict';

const args = process.argv.slice(2);
const timeoutArg = args.indexOf('--timeout-s');
const timeoutS = timeoutArg >= 0 ? Number(args[timeoutArg + 1]) : 120;

function blockTheLoop() {
  const cell = new Int32Array(new SharedArrayBuffer(4));
  process.stdout.write('BLOCKING\n');
  Atomics.wait(cell, 0, 0, timeoutS * 1000);
  process.exit(0);
}

process.stdout.write(`pid ${process.pid}\ntid main ${process.pid}\n`);
let ticks = 0;
const ticker = setInterval(() => {
  ticks += 1;
  if (ticks === 5) {
    clearInterval(ticker);
    setTimeout(blockTheLoop, 20);
  }
}, 20);
