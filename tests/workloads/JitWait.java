// JitWait: a JIT-compiled Java method that blocks in a pipe read, for the JIT perf map tests.
//
// `readOneByte` is called with data waiting until C2 compiles it (never inlined:
// `-XX:CompileCommand=dontinline,JitWait::readOneByte`), then `ready` is printed with its
// compilation checked by timing nothing: the caller asks `jcmd PID Compiler.perfmap` to write
// /tmp/perf-PID.map, which names the compiled code. After that the main thread keeps calling
// `readOneByte` on a pipe a writer thread feeds one byte every WAIT_MS (default 200) ms: the
// compiled method's frame is on the native stack of each blocked read.
//
// Run with `-XX:+PreserveFramePointer` so compiled code keeps frame pointers.
// Output (stdout): `pid <PID>`, `ready`. Argument: WAIT_MS.

import java.nio.ByteBuffer;
import java.nio.channels.Pipe;

public class JitWait {
    private static final int WARMUP_CALLS = 30_000;

    static int readOneByte(Pipe.SourceChannel source, ByteBuffer buffer) throws Exception {
        buffer.clear();
        return source.read(buffer);
    }

    public static void main(String[] args) throws Exception {
        long waitMs = args.length > 0 ? Long.parseLong(args[0]) : 200;
        System.out.println("pid " + ProcessHandle.current().pid());
        Pipe pipe = Pipe.open();
        ByteBuffer one = ByteBuffer.allocate(1);
        ByteBuffer buffer = ByteBuffer.allocateDirect(1);
        for (int i = 0; i < WARMUP_CALLS; i++) {
            one.clear();
            pipe.sink().write(one);
            readOneByte(pipe.source(), buffer);
        }
        // Let the compiler threads finish the queued compilations.
        Thread.sleep(500);
        System.out.println("ready");
        System.out.flush();
        Thread writer = new Thread(() -> {
            try {
                while (true) {
                    Thread.sleep(waitMs);
                    one.clear();
                    pipe.sink().write(one);
                }
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        }, "feeder");
        writer.setDaemon(true);
        writer.start();
        while (true) {
            readOneByte(pipe.source(), buffer);
        }
    }
}
