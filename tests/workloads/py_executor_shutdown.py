"""py_executor_shutdown: an asyncio loop stuck in ThreadPoolExecutor.shutdown, for `watch` tests.

The main thread runs an event loop (`asyncio.run`) with a 50 ms ticker, so a healthy loop cycles
through epoll_wait. After `--delay-ms` the task named "shutdown-task" (coroutine
`shutdown_in_task`) calls `executor.shutdown(wait=True)` synchronously, on the loop thread,
while the executor's only worker ("pool_0", in `wait_for_reply`) sits in `recv` on a TCP
connection to a listening socket of this process that accepted it and never sends. Shutdown
joins the worker, the worker never returns: both stuck forever, the loop with them.

Everything before the hang (the connection, the worker in recv, the reporter thread) is set up
first and then the loop cycles a few more ticks, so the last thing the loop thread did before
the join was epoll_wait.

Output (stdout, one line each): `pid <PID>`, `BLOCKING` right before the shutdown task is
created, then (once both threads are stuck) the facts:
    {"workload": "py_executor_shutdown", "python": {"version", "executable", "pid", "threading_file"},
     "port": P, "task": "shutdown-task",
     "threads": {"loop": {"tid", "name", "waits": "join", "on": "worker"},
                 "worker": {"tid", "name", "waits": "recv", "peer": "127.0.0.1:P"}},
     "files": {"executor": <concurrent/futures/thread.py>, "threading": <threading.py>}}
Lines marked `# LINE: <tag>` are where each thread's Python frames stop (tests look them up).
Options: --delay-ms N (ticks before the hang), --timeout-s N (default 120).
"""

import asyncio
import concurrent.futures
import concurrent.futures.thread as futures_thread
import socket
import threading

import py_stuck

TICK_S = 0.05
TASK_NAME = "shutdown-task"
POOL_PREFIX = "pool"


def wait_for_reply(client, worker, started):
    """The worker's job: a recv that the silent server never answers."""
    worker["tid"] = threading.get_native_id()
    worker["name"] = threading.current_thread().name
    started.set()
    return client.recv(1)  # LINE: worker-recv


async def tick():
    while True:
        await asyncio.sleep(TICK_S)


async def shutdown_in_task(executor):
    """Blocks the event loop's thread: joins a worker that never returns."""
    executor.shutdown(wait=True)  # LINE: loop-shutdown


async def run(args, facts):
    ticker = asyncio.create_task(tick())
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()

    executor = concurrent.futures.ThreadPoolExecutor(
        max_workers=1, thread_name_prefix=POOL_PREFIX
    )
    worker = {}
    started = threading.Event()
    executor.submit(wait_for_reply, client, worker, started)
    started.wait()
    loop_tid = threading.get_native_id()
    facts.update(
        {
            "port": port,
            "task": TASK_NAME,
            "threads": {
                "loop": {
                    "tid": loop_tid,
                    "name": threading.current_thread().name,
                    "waits": "join",
                    "on": "worker",
                },
                "worker": {
                    "tid": worker["tid"],
                    "name": worker["name"],
                    "waits": "recv",
                    "peer": "127.0.0.1:{}".format(port),
                },
            },
        }
    )
    py_stuck.report_when_stuck(
        lambda: {loop_tid: py_stuck.SYS_FUTEX, worker["tid"]: py_stuck.SYS_RECVFROM},
        lambda: facts,
        timeout_s=args.delay_ms / 1000 + 20,
    )
    # The loop cycles through epoll_wait until the hang.
    await asyncio.sleep(max(args.delay_ms / 1000, 3 * TICK_S))
    py_stuck.emit("BLOCKING")
    task = asyncio.create_task(shutdown_in_task(executor), name=TASK_NAME)
    await task
    ticker.cancel()
    accepted.close()


def main():
    args = py_stuck.start_from_args(__doc__)
    facts = {
        "workload": "py_executor_shutdown",
        "python": py_stuck.python_facts(),
        "files": {"executor": futures_thread.__file__, "threading": threading.__file__},
    }
    asyncio.run(run(args, facts))


if __name__ == "__main__":
    main()
