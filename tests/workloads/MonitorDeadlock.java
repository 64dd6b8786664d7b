/**
 * A `synchronized` ABBA deadlock: "Thread-0" locks lockA then wants lockB, "Thread-1" locks
 * lockB then wants lockA. Prints "pid PID" and "ready" once both hold their first lock.
 */
public class MonitorDeadlock {
    static final Object lockA = new Object();
    static final Object lockB = new Object();
    static final java.util.concurrent.CountDownLatch bothLocked =
        new java.util.concurrent.CountDownLatch(2);

    static void take(Object first, Object second) {
        synchronized (first) {
            bothLocked.countDown();
            try {
                bothLocked.await();
            } catch (InterruptedException e) {
                return;
            }
            synchronized (second) {
                System.out.println("never");
            }
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
