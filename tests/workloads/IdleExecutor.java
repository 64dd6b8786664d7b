// IdleExecutor: a fixed Java thread pool that ran its tasks and sits idle, for the
// `stallwatch watch` verdict tests.
//
// Three workers run three short tasks (so every worker thread exists), then wait for work in
// `LinkedBlockingQueue.take`. What main does next is the mode (first argument):
// - `idle`: waits in `CountDownLatch.await()` on a latch nobody counts down: an idle program,
//   nothing wrong;
// - `lost-result`: waits in `FutureTask.get()` on a task that was never submitted: the result
//   it waits for will never come, since no worker runs it;
// - `lost-completable`: waits in `CompletableFuture.get()` on a future nobody completes.
//
// Output (stdout, one line each): `pid <PID>`, `tid main <TID>`, `tid worker <TID>` per worker (kernel
// tids, from /proc/thread-self), then `READY`. It never exits by itself (a timer thread would
// be one more thread to reckon with): the test kills it.

import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.FutureTask;

public class IdleExecutor {
    static final int WORKERS = 3;

    static int tid() throws Exception {
        String self = Files.readSymbolicLink(Paths.get("/proc/thread-self")).toString();
        return Integer.parseInt(self.substring(self.lastIndexOf('/') + 1));
    }

    public static void main(String[] args) throws Exception {
        String mode = args.length > 0 ? args[0] : "idle";
        System.out.println("pid " + ProcessHandle.current().pid());
        System.out.println("tid main " + tid());
        ExecutorService pool = Executors.newFixedThreadPool(WORKERS);
        CountDownLatch started = new CountDownLatch(WORKERS);
        Future<?>[] tasks = new Future<?>[WORKERS];
        for (int i = 0; i < WORKERS; i++) {
            tasks[i] = pool.submit(() -> {
                started.countDown();
                started.await();
                return tid();
            });
        }
        for (Future<?> task : tasks) {
            System.out.println("tid worker " + task.get());
        }
        System.out.println("READY");
        System.out.flush();
        switch (mode) {
            case "idle":
                new CountDownLatch(1).await();
                break;
            case "lost-result":
                new FutureTask<Integer>(() -> 42).get();
                break;
            case "lost-completable":
                new CompletableFuture<Integer>().get();
                break;
            default:
                throw new IllegalArgumentException(mode);
        }
    }
}
