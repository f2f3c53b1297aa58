#!/usr/bin/env python3
"""Measures a Lambda binary's local cold start: process start -> first invocation answered.

Plays the Lambda Runtime API on a local port: hands the function one event, records when its
response arrives, then stops it. The function's clients are built and its connections warmed (its
init) before it asks for the event, so the figure is init + one invoke. Peak RSS is read from
/proc while it runs.

    scripts/measure-init.py <bootstrap> <event.json> [runs]
Environment for the function (tables, queue, endpoints) is passed through.
"""
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

binary, event_path = sys.argv[1], sys.argv[2]
runs = int(sys.argv[3]) if len(sys.argv) > 3 else 5
event = open(event_path, "rb").read()


class Runtime(http.server.BaseHTTPRequestHandler):
    answered = None
    served = False
    polled = None

    def log_message(self, *args):
        pass

    def do_GET(self):
        if Runtime.served:  # only one invocation per process; make the second poll wait
            time.sleep(30)
            return
        Runtime.served = True
        Runtime.polled = time.perf_counter()
        self.send_response(200)
        self.send_header("Lambda-Runtime-Aws-Request-Id", "req-1")
        self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 30000))
        self.send_header("Lambda-Runtime-Invoked-Function-Arn",
                         "arn:aws:lambda:us-east-1:123456789012:function:measure")
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(event)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length)
        Runtime.answered = (time.perf_counter(), self.path, body)
        self.send_response(202)
        self.end_headers()


def measure_once():
    """One cold start: (invoke ms, peak RSS MB, path, body, init ms), or the failure's reason."""
    Runtime.answered, Runtime.served = None, False
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Runtime)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = dict(os.environ, AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{server.server_address[1]}",
               AWS_LAMBDA_FUNCTION_NAME="measure", AWS_LAMBDA_FUNCTION_MEMORY_SIZE="128",
               AWS_LAMBDA_FUNCTION_VERSION="$LATEST", AWS_LAMBDA_LOG_FORMAT="JSON")
    with tempfile.TemporaryFile() as stderr:
        started = time.perf_counter()
        process = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        peak_kb = 0
        while Runtime.answered is None and time.perf_counter() - started < 20:
            try:
                with open(f"/proc/{process.pid}/status") as status:
                    for line in status:
                        if line.startswith("VmHWM:"):
                            peak_kb = max(peak_kb, int(line.split()[1]))
            except FileNotFoundError:
                break
            time.sleep(0.001)
        process.kill()
        exit_code = process.wait()
        server.shutdown()
        if Runtime.answered is None:
            stderr.seek(0)
            said = stderr.read().decode(errors="replace").strip()[-400:]
            return f"answered no invocation (exit {exit_code}): {said or 'nothing on stderr'}"
    at, path, body = Runtime.answered
    return ((at - started) * 1000, peak_kb / 1024, path, body[:120],
            (Runtime.polled - started) * 1000)


# A run that fails is tried once more (the emulators can stall right after a load test); the
# output says so, and a second failure ends the measurement.
results, first_failure, retries = [], None, 0
for _ in range(runs):
    outcome = measure_once()
    if isinstance(outcome, str):
        first_failure, retries = first_failure or outcome, retries + 1
        outcome = measure_once()
        if isinstance(outcome, str):
            sys.exit(f"{binary} {outcome}")
    results.append(outcome)

times = sorted(r[0] for r in results)
inits = sorted(r[4] for r in results)
print(f"init (start -> first poll, clients built, connections warmed): median "
      f"{inits[len(inits) // 2]:.1f} ms, min {inits[0]:.1f} ms; init + first invoke: median "
      f"{times[len(times) // 2]:.1f} ms, min {times[0]:.1f} ms over {runs} runs; "
      f"peak RSS {max(r[1] for r in results):.1f} MB; answer {results[-1][3]!r}")
if retries:
    print(f"({retries} run(s) retried; first failure: {first_failure[:200]})", file=sys.stderr)
