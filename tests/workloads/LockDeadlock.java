import java.util.concurrent.CountDownLatch;
import java.util.concurrent.locks.ReentrantLock;

/**
 * A `ReentrantLock` ABBA deadlock: "Thread-0" locks lockA then wants lockB, "Thread-1" locks
 * lockB then wants lockA. Prints "pid PID" and "ready" once both hold their first lock.
 */
public class LockDeadlock {
    static final ReentrantLock lockA = new ReentrantLock();
    static final ReentrantLock lockB = new ReentrantLock();
    static final CountDownLatch bothLocked = new CountDownLatch(2);

    static void take(ReentrantLock first, ReentrantLock second) {
        first.lock();
        try {
            bothLocked.countDown();
            bothLocked.await();
            second.lock();
            System.out.println("never");
        } catch (InterruptedException e) {
            return;
        } finally {
            first.unlock();
        }
    }

    public static void main(String[] args) throws Exception {
        Thread t0 = new Thread(() -> take(lockA, lockB));
        Thread t1 = new Thread(() -> take(lockB, lockA));
        t0.start();
        t1.start();
        bothLocked.await();
        System.out.println("pid " + ProcessHandle.current().pid());
        System.out.println("ready");
        t0.join();
    }
}
