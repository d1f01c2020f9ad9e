#!/usr/bin/perl
# bluegreen light app: the demo app's HTTP face in one small Perl process, for scale tests and
# benchmarks where 50 JVMs booting at once would measure the JVM, not the deploy tool. It boots in a
# few milliseconds and stays at a few MiB of memory. See README.md next to this file.
#
#   perl lightapp.pl --server.port=8080 [--port=N | --port N] [--server.address=0.0.0.0]
#                    [--app.version=V] [--bind-delay=MS] [--boot-delay=MS] [--broken]
#                    [--shutdown-delay=MS] [--shutdown-timeout=MS]
#   env: SERVER_PORT, SERVER_ADDRESS, APP_VERSION
#
# Endpoints, as the demo app answers them: GET /actuator/health (also /readiness, /liveness):
# {"status":"UP"} 200, DOWN 503 while booting or broken, OUT_OF_SERVICE 503 once stopping;
# GET / and /version: the version; GET /slow?ms=N: the version after N ms; GET /actuator/info.
# Every answer carries X-App-Version, X-App-Port and X-App-Pid. HTTP/1.1 keep-alive, many
# connections at once (one event loop over non-blocking sockets, no threads, no forks).
#
# SIGTERM: requests already waiting in the listen queue are accepted, then the listening socket is
# closed, health turns OUT_OF_SERVICE, requests received are finished (answered with
# "Connection: close"), idle connections are closed after 50 ms, and the process exits 0 once none
# is left and the shutdown delay has passed since the signal; exit 1 if requests are still running
# when the shutdown timeout (default 30 s) passes. The log (stdout) says when it started listening
# and how long its shutdown took, in the demo app's words.
use strict;
use warnings;
# Only XS modules of the core: IO::Socket would double the start-up time.
use Socket qw(AF_INET SOCK_STREAM SOL_SOCKET SO_REUSEADDR IPPROTO_TCP TCP_NODELAY inet_aton pack_sockaddr_in);
use Fcntl qw(F_GETFL F_SETFL O_NONBLOCK);
use Errno qw(EAGAIN EWOULDBLOCK EINTR);
use Time::HiRes qw(time sleep);

# The build helper (bluegreen_testbed::build_light_apps) rewrites this line with the version.
my $VERSION = 'dev';

$| = 1;
my %opt = (
    version          => $ENV{APP_VERSION} // $VERSION,
    port             => $ENV{SERVER_PORT} // 8080,
    address          => $ENV{SERVER_ADDRESS} // '0.0.0.0',
    bind_delay       => 0,
    boot_delay       => 0,
    shutdown_delay   => 0,
    shutdown_timeout => 30000,
    broken           => 0,
);
my %flag = (
    'server.port'      => 'port',
    'port'             => 'port',
    'server.address'   => 'address',
    'app.version'      => 'version',
    'bind-delay'       => 'bind_delay',
    'boot-delay'       => 'boot_delay',
    'shutdown-delay'   => 'shutdown_delay',
    'shutdown-timeout' => 'shutdown_timeout',
);
while (@ARGV) {
    my $a = shift @ARGV;
    if ($a eq '--broken') {
        $opt{broken} = 1;
    } elsif ($a =~ /^--broken=(.*)$/) {
        $opt{broken} = ($1 =~ /^(1|true|yes)$/i) ? 1 : 0;
    } elsif ($a =~ /^--([^=]+)=(.*)$/s) {
        $opt{ $flag{$1} } = $2 if $flag{$1};    # unknown --key=value: ignored, as Spring does
    } elsif ($a eq '--port' && @ARGV) {
        $opt{port} = shift @ARGV;
    } elsif ($a =~ /^--/) {
        # an unknown switch: ignored
    } else {
        fail("unexpected argument: $a");
    }
}
for my $k (qw(port bind_delay boot_delay shutdown_delay shutdown_timeout)) {
    fail("bad $k: $opt{$k}") unless $opt{$k} =~ /^[0-9]+$/;
}
$opt{broken} = 1 if $opt{version} =~ /^broken/;
my ($version, $port) = @opt{qw(version port)};
my $t0 = time;

my $term = 0;
$SIG{TERM} = sub { $term = 1 };
$SIG{INT}  = sub { $term = 1 };
$SIG{PIPE} = 'IGNORE';

sleep($opt{bind_delay} / 1000) if $opt{bind_delay} > 0 && !$term;
exit 0 if $term;
my $listener;
{
    my $ip = inet_aton($opt{address}) or fail("bad address: $opt{address}");
    socket($listener, AF_INET, SOCK_STREAM, 0) or fail("socket: $!");
    setsockopt($listener, SOL_SOCKET, SO_REUSEADDR, 1) or fail("SO_REUSEADDR: $!");
    bind($listener, pack_sockaddr_in($port, $ip)) && listen($listener, 256)
      or fail("cannot listen on $opt{address}:$port: $!");
    nonblocking($listener);
}
my $booted_at = time + $opt{boot_delay} / 1000;
logline("listening $version on port $port pid $$ (boot delay $opt{boot_delay} ms, shutdown delay "
      . "$opt{shutdown_delay} ms" . ($opt{broken} ? ', broken' : '') . ')');
my $started_logged = 0;

# Connections by file number: {sock, in, out, close (after the answer), due (a /slow answer's
# time), slow (its answer)}.
my %conns;
my $served = 0;
my ($stopping, $stop_t, $drained_logged) = (0, 0, 0);

sub logline { print "$_[0]\n" }

sub nonblocking {
    my $fh    = shift;
    my $flags = fcntl($fh, F_GETFL, 0) or fail("fcntl: $!");
    fcntl($fh, F_SETFL, $flags | O_NONBLOCK) or fail("fcntl: $!");
}

sub fail {
    print STDERR "light app: $_[0]\n";
    exit 2;
}

sub booted { time >= $booted_at }

sub busy {
    my $c = shift;
    return length($c->{in}) || length($c->{out}) || defined $c->{due};
}

sub in_flight { scalar grep { busy($_) } values %conns }

sub close_conn {
    my $c = shift;
    delete $conns{ fileno $c->{sock} };
    close $c->{sock};
}

sub answer {
    my ($c, $head, $code, $type, $body, $close) = @_;
    my %reason = (200 => 'OK', 400 => 'Bad Request', 404 => 'Not Found', 503 => 'Service Unavailable');
    $close ||= $stopping;
    $c->{out} .= "HTTP/1.1 $code " . ($reason{$code} // 'Unknown') . "\r\n"
      . "Content-Type: $type\r\nContent-Length: " . length($body) . "\r\n"
      . "X-App-Version: $version\r\nX-App-Port: $port\r\nX-App-Pid: $$\r\n"
      . ($close ? "Connection: close\r\n" : '') . "\r\n" . ($head ? '' : $body);
    $c->{close} = 1 if $close;
    $served++;
}

# Answers one request; returns 0 when the answer waits (a /slow request).
sub handle {
    my ($c, $method, $target, $close) = @_;
    my $head = $method eq 'HEAD';
    my ($path, $query) = split /\?/, $target, 2;
    if ($path =~ m{^/actuator/health(?:/readiness|/liveness)?$}) {
        my $status = $stopping ? 'OUT_OF_SERVICE' : (booted() && !$opt{broken}) ? 'UP' : 'DOWN';
        answer($c, $head, $status eq 'UP' ? 200 : 503, 'application/json', qq({"status":"$status"}), $close);
        return 1;
    }
    if ($path eq '/actuator/info') {
        my $b = booted() ? 'true' : 'false';
        my $s = $stopping ? 'true' : 'false';
        answer($c, $head, 200, 'application/json',
            qq({"version":"$version","port":$port,"pid":$$,"booted":$b,"shuttingDown":$s,"served":$served}), $close);
        return 1;
    }
    if (!booted() && !$stopping) {
        answer($c, $head, 503, 'text/plain', 'booting', $close);
        return 1;
    }
    if ($path eq '/' || $path eq '/version') {
        answer($c, $head, 200, 'text/plain', $version, $close);
        return 1;
    }
    if ($path eq '/slow') {
        my $ms = 1000;
        if (defined $query && $query =~ /(?:^|&)ms=([^&]*)/) {
            $ms = $1;
            if ($ms !~ /^[0-9]+$/) {
                answer($c, $head, 400, 'text/plain', 'bad ms', $close);
                return 1;
            }
        }
        $c->{due}  = time + $ms / 1000;
        $c->{slow} = [$head, $close];
        return 0;
    }
    answer($c, $head, 404, 'text/plain', 'not found', $close);
    return 1;
}

# Parses and answers the complete requests in the connection's buffer, in order.
sub serve {
    my $c = shift;
    while (!defined $c->{due} && !$c->{close}) {
        my $end = index($c->{in}, "\r\n\r\n");
        if ($end < 0) {
            if (length($c->{in}) > 65536) {
                answer($c, 0, 400, 'text/plain', 'header too large', 1);
                $c->{in} = '';
            }
            return;
        }
        my $header = substr($c->{in}, 0, $end);
        my ($line, @fields) = split /\r\n/, $header;
        my ($method, $target, $proto) = split / /, $line // '';
        if (!defined $proto || $proto !~ m{^HTTP/1\.[01]$}) {
            answer($c, 0, 400, 'text/plain', 'bad request', 1);
            $c->{in} = '';
            return;
        }
        my ($length, $connection) = (0, '');
        for (@fields) {
            $length     = $1 if /^content-length:\s*([0-9]+)\s*$/i;
            $connection = lc $1 if /^connection:\s*(\S+)/i;
        }
        return if length($c->{in}) < $end + 4 + $length;    # the body is still coming
        substr($c->{in}, 0, $end + 4 + $length) = '';
        my $close = $connection eq 'close' || ($proto eq 'HTTP/1.0' && $connection ne 'keep-alive');
        handle($c, $method, $target, $close);
    }
}

sub flush_out {
    my $c = shift;
    while (length $c->{out}) {
        my $n = syswrite($c->{sock}, $c->{out});
        if (!defined $n) {
            return if $! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR;
            close_conn($c);    # the client went away
            return;
        }
        substr($c->{out}, 0, $n) = '';
    }
    close_conn($c) if $c->{close};
}

sub accept_all {
    while (accept(my $s, $listener)) {
        nonblocking($s);
        setsockopt($s, IPPROTO_TCP, TCP_NODELAY, 1);
        $conns{ fileno $s } = {sock => $s, in => '', out => ''};
    }
}

sub begin_shutdown {
    $stopping = 1;
    $stop_t   = time;
    accept_all();    # what already waits in the listen queue is served, not reset
    close $listener;
    undef $listener;
    logline("shutdown started: stopping $version on port $port pid $$: " . in_flight()
          . " request(s) in flight; shutdown delay $opt{shutdown_delay} ms, timeout $opt{shutdown_timeout} ms");
}

sub end_shutdown {
    my $left = in_flight();
    my $took = int((time - $stop_t) * 1000);
    if ($left) {
        logline("shutdown ended after $took ms: stopped $version on port $port pid $$: shutdown timeout, "
              . "$left request(s) still in flight");
    } else {
        logline("shutdown ended after $took ms: stopped $version on port $port pid $$ after serving $served request(s)");
    }
    exit($left ? 1 : 0);
}

while (1) {
    my $now = time;
    if (!$started_logged && booted()) {
        $started_logged = 1;
        logline(sprintf 'started %s on port %d pid %d in %.0f ms', $version, $port, $$, ($now - $t0) * 1000);
    }
    begin_shutdown() if $term && !$stopping;
    if ($stopping) {
        my $since = ($now - $stop_t) * 1000;
        if ($since >= 50) {
            # Idle connections (nothing received, nothing owed) are closed; busy ones finish.
            busy($_) or close_conn($_) for values %conns;
        }
        if (!%conns) {
            if (!$drained_logged) {
                $drained_logged = 1;
                logline('shutdown: no request in flight after ' . int($since) . ' ms');
            }
            end_shutdown() if $since >= $opt{shutdown_delay};
        }
        end_shutdown() if $since >= $opt{shutdown_timeout};
    }
    # Slow answers that are due.
    for my $c (values %conns) {
        next unless defined $c->{due} && $c->{due} <= $now;
        my ($head, $close) = @{ $c->{slow} };
        delete @$c{qw(due slow)};
        answer($c, $head, 200, 'text/plain', $version, $close);
        flush_out($c);
        serve($c) if $conns{ fileno $c->{sock} // -1 };
    }
    my ($rin, $win) = ('', '');
    vec($rin, fileno($listener), 1) = 1 if $listener;
    my $timeout = $stopping ? 0.01 : booted() ? 1 : $booted_at - $now;
    for my $c (values %conns) {
        my $fd = fileno $c->{sock};
        vec($rin, $fd, 1) = 1 unless $c->{close};
        vec($win, $fd, 1) = 1 if length $c->{out};
        if (defined $c->{due}) {
            my $left = $c->{due} - $now;
            $timeout = $left if $left < $timeout;
        }
    }
    $timeout = 0 if $timeout < 0;
    my $n = select(my $rout = $rin, my $wout = $win, undef, $timeout);
    next if $n <= 0;    # a timeout, or EINTR (a signal)
    accept_all() if $listener && vec($rout, fileno($listener), 1);
    for my $c (values %conns) {
        my $fd = fileno $c->{sock};
        next unless defined $fd && $conns{$fd};
        if (vec($wout, $fd, 1)) {
            flush_out($c);
            next unless $conns{$fd};
        }
        next unless vec($rout, $fd, 1);
        my $got = sysread($c->{sock}, my $buf, 65536);
        if (!defined $got) {
            next if $! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR;
            close_conn($c);
            next;
        }
        if ($got == 0) {    # the client closed its side; what it still waits for is not sent
            close_conn($c);
            next;
        }
        $c->{in} .= $buf;
        serve($c);
        flush_out($c);
    }
}
