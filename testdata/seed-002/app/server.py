#!/usr/bin/env python3
"""One process ("mongrel") of the seed-002 example app: a tiny HTTP server.

    python3 server.py NAME PORT BIND

GET / answers 200 "NAME version V", V being the content of the VERSION file of the release this
file is in (read once, at start). GET /health answers 200 "ok", or 500 while a file BROKEN exists
in that release. Paths are relative to the release folder (this file's folder, resolved
physically), where log/ and tmp/pids/ are links into shared/ on the servers.

Once listening, it appends "<unix time> NAME started pid=<pid> version=V" to log/mongrel.log,
then writes its pid to tmp/pids/NAME.pid; on SIGTERM (or SIGINT) it stops listening, removes the
pid file if it still holds its pid, appends "<unix time> NAME stopped" and exits 0. Times are
seconds since the epoch with nine decimals, as `date +%s.%N` prints them. bin/mongrel starts and
stops it.
"""

import http.server
import os
import signal
import sys
import time

RELEASE = os.path.dirname(os.path.realpath(__file__))


def now():
    """The time as `date +%s.%N` prints it."""
    ns = time.time_ns()
    return "%d.%09d" % (ns // 1_000_000_000, ns % 1_000_000_000)


def log(line):
    """Appends "<time> line" to log/mongrel.log in one write."""
    with open(os.path.join(RELEASE, "log", "mongrel.log"), "a") as f:
        f.write("%s %s\n" % (now(), line))


class Stop(Exception):
    """Raised by the signal handler to end serve_forever."""


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: server.py NAME PORT BIND")
    name, port, bind = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with open(os.path.join(RELEASE, "VERSION")) as f:
        version = f.read().strip()
    greeting = ("%s version %s\n" % (name, version)).encode()
    broken = os.path.join(RELEASE, "BROKEN")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/":
                self.reply(200, greeting)
            elif self.path == "/health":
                if os.path.exists(broken):
                    self.reply(500, b"broken\n")
                else:
                    self.reply(200, b"ok\n")
            else:
                self.reply(404, b"not found\n")

        def reply(self, code, body):
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):
            pass  # a line per request would bury the log

    def stop(signum, frame):
        raise Stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server = http.server.ThreadingHTTPServer((bind, port), Handler)  # binds and listens
    except OSError as e:
        sys.exit("server.py: %s: cannot listen on %s:%d: %s" % (name, bind, port, e))
    pid = str(os.getpid())
    pidfile = os.path.join(RELEASE, "tmp", "pids", name + ".pid")
    try:
        # The log line first: bin/mongrel returns once the pid file is there, so a restart's
        # "started" line always precedes whatever the deploy does next.
        log("%s started pid=%s version=%s" % (name, pid, version))
        with open(pidfile + ".new", "w") as f:
            f.write(pid + "\n")
        os.replace(pidfile + ".new", pidfile)
        server.serve_forever(poll_interval=0.1)
    except Stop:
        pass
    finally:
        server.server_close()
        try:
            with open(pidfile) as f:
                if f.read().strip() == pid:
                    os.remove(pidfile)
        except OSError:
            pass
    log("%s stopped" % name)


if __name__ == "__main__":
    main()
