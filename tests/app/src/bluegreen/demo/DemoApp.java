package bluegreen.demo;

import com.sun.net.httpserver.Headers;
import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.PrintStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.Executor;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

/**
 * A tiny Spring-Boot-shaped HTTP app (JDK only) for bluegreen end-to-end tests.
 *
 * <pre>
 * java -jar app.jar --server.port=8080 [--server.address=0.0.0.0] [--bind-delay=MS] [--boot-delay=MS]
 *                   [--broken] [--shutdown-delay=MS] [--shutdown-timeout=MS] [--pid-file=PATH]
 *                   [--app.version=V] [--die-after-health=K]
 * env: SERVER_PORT, BIND_DELAY_MS, BOOT_DELAY_MS, APP_BROKEN=1, SHUTDOWN_DELAY_MS, SHUTDOWN_TIMEOUT_MS,
 *      APP_VERSION, APP_DIE_AFTER_HEALTH
 * </pre>
 *
 * Precedence (like Spring): command line argument, then -D system property (server.port, app.version,
 * bind.delay, boot.delay, app.broken, shutdown.delay, shutdown.timeout), then environment variable, then
 * the built-in default.
 * The version defaults to the {@code /version.txt} resource baked into the jar by build.sh.
 *
 * Endpoints: GET /actuator/health (also /readiness, /liveness), GET / and /version, GET /slow?ms=N,
 * GET /actuator/info. Every response carries X-App-Version, X-App-Port and X-App-Pid headers.
 * The port is bound after the bind delay (default 0: at once; Spring Boot binds its port only once the
 * context is up, seconds after start); then, until the boot delay has passed, every endpoint answers 503
 * (health says DOWN). With --broken (or APP_BROKEN=1, or a version starting with "broken") the health stays DOWN forever
 * while the other endpoints work; --broken=false / APP_BROKEN=0 turns that off.
 * With --die-after-health=K (or a version starting with "dies", which means K=2) the app answers UP to its
 * first K health requests, then dies (exit 3, no answer, no graceful shutdown) on the next health request:
 * a version that passes bluegreen's health polling and crashes right after the switch.
 *
 * SIGTERM: the listening socket is closed at once, health turns OUT_OF_SERVICE, requests already received
 * are finished (answered with "Connection: close"), and the JVM exits 0 once none is left and the shutdown
 * delay (default 0) has passed since the signal: like a Spring context whose beans take that long to close.
 * Both are bounded by the shutdown timeout (default 30 s, Spring's timeout-per-shutdown-phase): if requests
 * are still running when it passes the JVM exits 1. The log says when the shutdown started and how long it
 * took ("shutdown started ...", "shutdown ended after N ms ...").
 */
public final class DemoApp {
    private static final PrintStream OUT = System.out;
    /** Set by {@link #fail}: the exit is not a graceful shutdown and keeps its status. */
    private static volatile boolean failing;

    private final String version;
    private final String bindAddress;
    private final int port;
    private final long bindDelayMs;
    private final long bootDelayMs;
    private final long shutdownDelayMs;
    private final boolean broken;
    private final long shutdownTimeoutMs;
    private final String pidFile;
    private final int dieAfterHealth;
    private final AtomicInteger healthyAnswers = new AtomicInteger();
    private final long pid = ProcessHandle.current().pid();

    private final AtomicInteger active = new AtomicInteger();
    private final AtomicLong served = new AtomicLong();
    private final Object idleLock = new Object();
    private volatile boolean booted;
    private volatile boolean shuttingDown;
    private volatile HttpServer server;

    private DemoApp(String[] args) {
        String argVersion = null, argPort = null, argAddress = null, argDelay = null, argTimeout = null,
                argPidFile = null, argBindDelay = null, argShutdownDelay = null;
        String argDie = null;
        Boolean argBroken = null;
        for (String a : args) {
            if (a.equals("--broken")) {
                argBroken = true;
            } else if (a.startsWith("--broken=")) {
                argBroken = truthy(value(a));
            } else if (a.startsWith("--server.port=")) {
                argPort = value(a);
            } else if (a.startsWith("--server.address=")) {
                argAddress = value(a);
            } else if (a.startsWith("--boot-delay=")) {
                argDelay = value(a);
            } else if (a.startsWith("--bind-delay=")) {
                argBindDelay = value(a);
            } else if (a.startsWith("--shutdown-delay=")) {
                argShutdownDelay = value(a);
            } else if (a.startsWith("--shutdown-timeout=")) {
                argTimeout = value(a);
            } else if (a.startsWith("--pid-file=")) {
                argPidFile = value(a);
            } else if (a.startsWith("--app.version=")) {
                argVersion = value(a);
            } else if (a.startsWith("--die-after-health=")) {
                argDie = value(a);
            } else if (a.startsWith("--")) {
                // Spring Boot turns unknown --key=value arguments into properties; ignore them likewise.
            } else {
                fail("unexpected argument: " + a);
            }
        }
        version = first(argVersion, System.getProperty("app.version"), System.getenv("APP_VERSION"),
                resourceVersion(), "dev");
        port = parseInt("server.port",
                first(argPort, System.getProperty("server.port"), System.getenv("SERVER_PORT"), "8080"));
        bindAddress = first(argAddress, System.getProperty("server.address"), System.getenv("SERVER_ADDRESS"),
                "0.0.0.0");
        bootDelayMs = parseInt("boot-delay",
                first(argDelay, System.getProperty("boot.delay"), System.getenv("BOOT_DELAY_MS"), "0"));
        bindDelayMs = parseInt("bind-delay",
                first(argBindDelay, System.getProperty("bind.delay"), System.getenv("BIND_DELAY_MS"), "0"));
        shutdownDelayMs = parseInt("shutdown-delay", first(argShutdownDelay, System.getProperty("shutdown.delay"),
                System.getenv("SHUTDOWN_DELAY_MS"), "0"));
        shutdownTimeoutMs = parseInt("shutdown-timeout", first(argTimeout, System.getProperty("shutdown.timeout"),
                System.getenv("SHUTDOWN_TIMEOUT_MS"), "30000"));
        // A jar built as version "broken..." (tests/app/build.sh OUT broken) is broken unless told otherwise.
        broken = argBroken != null ? argBroken
                : truthy(first(System.getProperty("app.broken"), System.getenv("APP_BROKEN"),
                        version.startsWith("broken") ? "1" : "0"));
        // A jar built as version "dies..." crashes on its third health request unless told otherwise.
        dieAfterHealth = parseInt("die-after-health", first(argDie, System.getProperty("die.after.health"),
                System.getenv("APP_DIE_AFTER_HEALTH"), version.startsWith("dies") ? "2" : "0"));
        String pf = first(argPidFile, System.getProperty("pid.file"), System.getenv("PID_FILE"));
        pidFile = pf == null ? "" : pf;
    }

    public static void main(String[] args) throws Exception {
        new DemoApp(args).run();
    }

    private void run() throws Exception {
        ThreadPoolExecutor pool = new ThreadPoolExecutor(64, 64, 30, TimeUnit.SECONDS,
                new LinkedBlockingQueue<>(), r -> {
                    Thread t = new Thread(r, "http-worker");
                    t.setDaemon(true);
                    return t;
                });
        pool.allowCoreThreadTimeOut(true);
        // Registered first, as Spring registers its context's hook: a SIGTERM during the bind delay is
        // a graceful shutdown too.
        Runtime.getRuntime().addShutdownHook(new Thread(this::shutdown, "graceful-shutdown"));
        if (!pidFile.isEmpty()) {
            Files.writeString(Path.of(pidFile), pid + "\n");
        }
        if (bindDelayMs > 0) {
            log("starting " + version + " pid " + pid + ": port " + port + " bound in " + bindDelayMs + " ms");
            Thread.sleep(bindDelayMs);
        }
        if (shuttingDown) {
            return;
        }
        HttpServer s = null;
        try {
            s = HttpServer.create(new InetSocketAddress(InetAddress.getByName(bindAddress), port), 256);
        } catch (IOException e) {
            fail("cannot listen on " + bindAddress + ":" + port + ": " + e);
        }
        s.setExecutor(new CountingExecutor(pool));
        s.createContext("/", this::handle);
        s.start();
        server = s;
        log("listening " + version + " on port " + port + " pid " + pid + " (bind delay " + bindDelayMs
                + " ms, boot delay " + bootDelayMs + " ms, shutdown delay " + shutdownDelayMs + " ms"
                + (broken ? ", broken" : "")
                + (dieAfterHealth > 0 ? ", dies after " + dieAfterHealth + " healthy answers" : "") + ")");
        if (bootDelayMs > 0) {
            Thread.sleep(bootDelayMs);
        }
        if (shuttingDown) {
            return;
        }
        booted = true;
        log("started " + version + " on port " + port + " pid " + pid);
        if (broken) {
            log("broken mode: health stays DOWN");
        }
        // The HTTP dispatcher thread is not a daemon: the JVM keeps running until SIGTERM.
    }

    /** Counts every exchange from the moment the server hands it over until its response is written. */
    private final class CountingExecutor implements Executor {
        private final ThreadPoolExecutor delegate;

        CountingExecutor(ThreadPoolExecutor delegate) {
            this.delegate = delegate;
        }

        @Override
        public void execute(Runnable task) {
            active.incrementAndGet();
            try {
                delegate.execute(() -> {
                    try {
                        task.run();
                    } finally {
                        finished();
                    }
                });
            } catch (RejectedExecutionException e) {
                finished();
                throw e;
            }
        }

        private void finished() {
            if (active.decrementAndGet() == 0) {
                synchronized (idleLock) {
                    idleLock.notifyAll();
                }
            }
        }
    }

    private void handle(HttpExchange ex) {
        try {
            try (InputStream in = ex.getRequestBody()) {
                in.transferTo(OutputStream.nullOutputStream());
            }
            Headers h = ex.getResponseHeaders();
            h.set("X-App-Version", version);
            h.set("X-App-Port", Integer.toString(port));
            h.set("X-App-Pid", Long.toString(pid));
            if (shuttingDown) {
                h.set("Connection", "close");
            }
            String path = ex.getRequestURI().getPath();
            switch (path) {
                case "/actuator/health":
                case "/actuator/health/readiness":
                case "/actuator/health/liveness": {
                    String status = shuttingDown ? "OUT_OF_SERVICE" : (booted && !broken) ? "UP" : "DOWN";
                    int code = status.equals("UP") ? 200 : 503;
                    if (code == 200 && dieAfterHealth > 0 && healthyAnswers.incrementAndGet() > dieAfterHealth) {
                        log("dying on health request " + healthyAnswers.get() + " (after " + dieAfterHealth
                                + " healthy answers): " + version + " on port " + port + " pid " + pid);
                        Runtime.getRuntime().halt(3);
                    }
                    send(ex, code, "application/json", "{\"status\":\"" + status + "\"}");
                    return;
                }
                case "/actuator/info":
                    send(ex, 200, "application/json", "{\"version\":\"" + version + "\",\"port\":" + port
                            + ",\"pid\":" + pid + ",\"booted\":" + booted + ",\"broken\":" + broken
                            + ",\"shuttingDown\":" + shuttingDown + ",\"active\":" + active.get()
                            + ",\"served\":" + served.get() + "}");
                    return;
                default:
                    break;
            }
            if (!booted && !shuttingDown) {
                send(ex, 503, "text/plain", "booting");
                return;
            }
            switch (path) {
                case "/":
                case "/version":
                    send(ex, 200, "text/plain", version);
                    return;
                case "/slow": {
                    long ms = 1000;
                    String q = ex.getRequestURI().getRawQuery();
                    if (q != null) {
                        for (String kv : q.split("&")) {
                            if (kv.startsWith("ms=")) {
                                try {
                                    ms = Long.parseLong(kv.substring(3));
                                } catch (NumberFormatException e) {
                                    send(ex, 400, "text/plain", "bad ms");
                                    return;
                                }
                            }
                        }
                    }
                    try {
                        Thread.sleep(Math.max(0, ms));
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                    }
                    send(ex, 200, "text/plain", version);
                    return;
                }
                default:
                    send(ex, 404, "text/plain", "not found");
            }
        } catch (IOException | RuntimeException e) {
            // Client went away or similar.
        } finally {
            ex.close();
        }
    }

    private void send(HttpExchange ex, int code, String type, String body) throws IOException {
        byte[] bytes = body.getBytes(StandardCharsets.UTF_8);
        ex.getResponseHeaders().set("Content-Type", type);
        if (ex.getRequestMethod().equals("HEAD")) {
            ex.sendResponseHeaders(code, -1);
        } else {
            ex.sendResponseHeaders(code, bytes.length);
            try (OutputStream os = ex.getResponseBody()) {
                os.write(bytes);
            }
        }
        served.incrementAndGet();
    }

    private void shutdown() {
        if (failing) {
            return;
        }
        long started = System.nanoTime();
        shuttingDown = true;
        long delayMs = Math.min(Math.max(0, shutdownDelayMs), shutdownTimeoutMs);
        log("shutdown started: stopping " + version + " on port " + port + " pid " + pid + ": " + active.get()
                + " request(s) in flight; shutdown delay " + delayMs + " ms, timeout " + shutdownTimeoutMs
                + " ms");
        // HttpServer.stop closes the listening socket at once, then waits for the exchanges it knows about
        // (in JDK 17 it may wait the whole delay when idle), so it runs on its own thread and we track
        // in-flight exchanges ourselves.
        HttpServer s = server;
        if (s != null) {
            Thread stopper = new Thread(() -> s.stop((int) (shutdownTimeoutMs / 1000) + 1), "http-stop");
            stopper.setDaemon(true);
            stopper.start();
        }
        long deadline = started + TimeUnit.MILLISECONDS.toNanos(shutdownTimeoutMs);
        long notBefore = started + TimeUnit.MILLISECONDS.toNanos(delayMs);
        boolean drainedLogged = false;
        try {
            // Let requests that reached the server just before the listener closed be dispatched and counted.
            Thread.sleep(50);
            synchronized (idleLock) {
                while (true) {
                    long now = System.nanoTime();
                    long left = TimeUnit.NANOSECONDS.toMillis(deadline - now);
                    if (left <= 0) {
                        break;
                    }
                    if (active.get() > 0) {
                        idleLock.wait(Math.min(left, 100));
                        continue;
                    }
                    if (!drainedLogged) {
                        drainedLogged = true;
                        log("shutdown: no request in flight after " + TimeUnit.NANOSECONDS.toMillis(now - started)
                                + " ms");
                    }
                    long waitNs = notBefore - now;
                    if (waitNs <= 0) {
                        break;
                    }
                    // Like beans that take their time to close; requests still being received are waited for.
                    idleLock.wait(Math.min((waitNs + 999_999) / 1_000_000, 100));
                }
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        int left = active.get();
        long tookMs = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - started);
        if (!pidFile.isEmpty()) {
            try {
                Files.deleteIfExists(Path.of(pidFile));
            } catch (IOException e) {
                // ignore
            }
        }
        if (left == 0) {
            log("shutdown ended after " + tookMs + " ms: stopped " + version + " on port " + port + " pid " + pid
                    + " after serving " + served.get() + " request(s)");
        } else {
            log("shutdown ended after " + tookMs + " ms: stopped " + version + " on port " + port + " pid " + pid
                    + ": shutdown timeout, " + left + " request(s) still in flight");
        }
        OUT.flush();
        System.err.flush();
        Runtime.getRuntime().halt(left == 0 ? 0 : 1);
    }

    private static void log(String line) {
        synchronized (OUT) {
            OUT.println(line);
            OUT.flush();
        }
    }

    private static void fail(String message) {
        failing = true;
        System.err.println("demo app: " + message);
        System.err.flush();
        System.exit(2);
    }

    private static String value(String arg) {
        return arg.substring(arg.indexOf('=') + 1);
    }

    private static boolean truthy(String s) {
        return s != null && (s.equals("1") || s.equalsIgnoreCase("true") || s.equalsIgnoreCase("yes"));
    }

    private static String first(String... candidates) {
        for (String c : candidates) {
            if (c != null && !c.isEmpty()) {
                return c;
            }
        }
        return null;
    }

    private static int parseInt(String what, String s) {
        try {
            return Integer.parseInt(s.trim());
        } catch (NumberFormatException e) {
            fail("bad " + what + ": " + s);
            return 0;
        }
    }

    private static String resourceVersion() {
        try (InputStream in = DemoApp.class.getResourceAsStream("/version.txt")) {
            return in == null ? null : new String(in.readAllBytes(), StandardCharsets.UTF_8).trim();
        } catch (IOException e) {
            return null;
        }
    }
}
