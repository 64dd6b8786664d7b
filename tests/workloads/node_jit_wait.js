// node_jit_wait: a named JS function that blocks synchronously, for the JIT perf map tests.
//
// Run with `node --perf-basic-prof --interpreted-frames-native-stack`: V8 then writes
// /tmp/perf-PID.map, naming each JS function's code (interpreted functions get a copy of
// the interpreter entry in anonymous memory), so the native stack of the blocked thread has a
// frame named after `blockingWaitInJs`.
//
// Output (stdout): `pid <PID>`, `ready` once the function ran a first time (its code is in
// the map), then `done` after the waits. Options: --wait-ms N (default 200): one wait;
// --count N (default 10): how many waits; --start-delay-ms N (default 0): pause (on the event
// loop, not in the function) between `ready` and the waits.
'use strict';

const args = process.argv.slice(2);
function option(name, fallback) {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : fallback;
}
const waitMs = option('--wait-ms', 200);
const count = option('--count', 10);
const startDelayMs = option('--start-delay-ms', 0);

const cell = new Int32Array(new SharedArrayBuffer(4));

// Sleeps in Atomics.wait on a cell nobody notifies: the thread blocks in a futex for waitMs.
function blockingWaitInJs(ms) {
  return Atomics.wait(cell, 0, 0, ms);
}

process.stdout.write(`pid ${process.pid}\n`);
blockingWaitInJs(1);
process.stdout.write('ready\n');
setTimeout(() => {
  for (let i = 0; i < count; i += 1) {
    blockingWaitInJs(waitMs);
  }
  process.stdout.write('done\n');
}, startDelayMs);
