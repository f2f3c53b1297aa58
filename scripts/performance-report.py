#!/usr/bin/env python3
"""docs/performance.md from the outputs of `make bench` (scripts/bench.sh). Python 3.11 stdlib only.

    scripts/performance-report.py cold-start OUT.json
        Inside `scripts/emulators.sh run`: unzips the x86_64 receiver and processor zips
        (target/lambda/x86_64/<function>/bootstrap.zip), creates their table and queue on the
        emulators and runs scripts/measure-init.py on each; writes the figures to OUT.json.
    scripts/performance-report.py report RAW_DIR [--seconds N] [--failed STAGE ...]
        Reads criterion's estimates (target/criterion/in_process/*/new/estimates.json), the
        RESULT lines of load_local (with and without forwarding) and load_aws, the calls counted
        by the contract tests (processor_calls.json, notifier_calls.json) and the cold-start
        figures in RAW_DIR, the zip sizes, and writes docs/performance.md.
"""
import argparse
import datetime
import glob
import hashlib
import hmac
import json
import os
import platform
import re
import stat
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "events")
CRITERION = os.path.join(ROOT, "target", "criterion", "in_process")
LAMBDA_DIR = os.path.join(ROOT, "target", "lambda")
OUTPUT = os.path.join(ROOT, "docs", "performance.md")
FUNCTIONS = ["receiver", "processor", "sweeper", "api"]  # as scripts/build-lambdas.sh builds them
ARCHES = ["arm64", "x86_64"]
MB = 1024 * 1024  # as scripts/build-lambdas.sh prints sizes

BUDGET_PER_WEBHOOK_US = 10.0
BUDGET_OVERHEAD = 1.15
BUDGET_LOCAL_RATE = 5000.0
BUDGET_LOCAL_P99_MS = 10.0
BUDGET_FORWARD_RATE = 1000.0     # webhooks/s offered with forwarding on
BUDGET_CHANGE_LAG_P99_MS = 1000.0
BUDGET_ZIP_MB = 6.0
BUDGET_INIT_MS = 50.0
BUDGET_RSS_MB = 32.0

# criterion benchmark id -> what the row says
STEPS = [
    ("auth", "auth: `SecretSet::matches` on the URL secret"),
    ("parse", "parse: `WatiEvent::parse`"),
    ("key", "key: `idempotency_key`"),
    ("record_build", "record build: receipt time, `QueuedEvent` + `LedgerEntry`"),
]
PROCESSOR_STEP = ("processor_from_event_merge",
                  "processor's pure work per event: `MessageRecord::from_event` + oversized-id "
                  "check + `merge` into the stored state")

SECRET = "cold-start-webhook-secret-0123456789"
TOKEN = "cold-start-read-api-token-0123456789"


# ---------------------------------------------------------------------------------- cold start

def aws_post(endpoint, service, target, payload):
    """One JSON-protocol call, SigV4-signed with the environment's (emulator) credentials."""
    body = json.dumps(payload).encode()
    region = os.environ.get("AWS_REGION", "us-east-1")
    key_id = os.environ.get("AWS_ACCESS_KEY_ID", "test")
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY", "test")
    host = urllib.parse.urlparse(endpoint).netloc
    amz_date = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    headers = {"content-type": "application/x-amz-json-1.0", "host": host,
               "x-amz-date": amz_date, "x-amz-target": target}
    names = sorted(headers)
    canonical = "\n".join(["POST", "/", "", "".join(f"{n}:{headers[n]}\n" for n in names),
                           ";".join(names), hashlib.sha256(body).hexdigest()])
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret).encode()
    for part in scope.split("/"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={key_id}/{scope}, "
                                f"SignedHeaders={';'.join(names)}, Signature={signature}")
    del headers["host"]
    request = urllib.request.Request(endpoint.rstrip("/") + "/", data=body, headers=headers,
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        text = error.read().decode(errors="replace")
        if "ResourceInUse" in text or "already exists" in text:
            return {}
        raise RuntimeError(f"{target}: {error.code} {text[:200]}") from None


def create_resources():
    """The ledger and state tables (template.yaml's keys) and a queue; returns their names/URL."""
    dynamodb = os.environ["AWS_ENDPOINT_URL_DYNAMODB"]
    sqs = os.environ["AWS_ENDPOINT_URL_SQS"]
    ledger, state = "perf-cold-start-ledger", "perf-cold-start-state"
    aws_post(dynamodb, "dynamodb", "DynamoDB_20120810.CreateTable", {
        "TableName": ledger, "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}]})
    aws_post(dynamodb, "dynamodb", "DynamoDB_20120810.CreateTable", {
        "TableName": state, "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [{"AttributeName": n, "AttributeType": "S"}
                                 for n in ("pk", "sk", "contact")],
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"},
                      {"AttributeName": "sk", "KeyType": "RANGE"}],
        "GlobalSecondaryIndexes": [{
            "IndexName": "by_contact",
            "KeySchema": [{"AttributeName": "contact", "KeyType": "HASH"}],
            "Projection": {"ProjectionType": "ALL"}}]})
    queue = aws_post(sqs, "sqs", "AmazonSQS.CreateQueue", {"QueueName": "perf-cold-start"})
    return ledger, state, queue["QueueUrl"]


def create_secret():
    """The stack's secret as template.yaml's Secrets holds it, on the emulators' Secrets Manager;
    returns its ARN, the receiver's SECRET_ARN (it reads the secret during its init)."""
    endpoint = os.environ["AWS_ENDPOINT_URL_SECRETS_MANAGER"]
    name = "perf-cold-start"
    value = {"webhookSecret": SECRET, "webhookSecretPrevious": "", "apiToken": TOKEN,
             "apiTokenPrevious": ""}
    created = aws_post(endpoint, "secretsmanager", "secretsmanager.CreateSecret",
                       {"Name": name, "SecretString": json.dumps(value)})
    if not created:  # already there (an earlier run on the same emulators)
        created = aws_post(endpoint, "secretsmanager", "secretsmanager.DescribeSecret",
                           {"SecretId": name})
    return created["ARN"]


def function_event(function, body):
    """What the function's first invocation gets: an HTTP API request or an SQS batch of one."""
    text = body.decode()
    if function == "receiver":
        path = f"/webhook/{SECRET}"
        domain = "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com"
        return {
            "version": "2.0", "routeKey": "POST /webhook/{secret}", "rawPath": path,
            "rawQueryString": "", "headers": {"content-type": "application/json", "host": domain},
            "requestContext": {
                "accountId": "123456789012", "apiId": "a1b2c3d4e5", "domainName": domain,
                "domainPrefix": "a1b2c3d4e5",
                "http": {"method": "POST", "path": path, "protocol": "HTTP/1.1",
                         "sourceIp": "203.0.113.7", "userAgent": "Wati"},
                "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
                "routeKey": "POST /webhook/{secret}", "stage": "$default",
                "time": "26/Nov/2025:10:00:00 +0000", "timeEpoch": 1764151200000},
            "pathParameters": {"secret": SECRET}, "body": text, "isBase64Encoded": False}
    queued = {"key": "sentMessageDELIVERED:cold-start", "received_at": 1764238453, "body": text}
    return {"Records": [{
        "messageId": "m-1", "receiptHandle": "r-1", "body": json.dumps(queued),
        "attributes": {}, "messageAttributes": {}, "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:perf-cold-start",
        "awsRegion": "us-east-1"}]}


INIT_LINE = re.compile(
    r"init \(.*?\): median (?P<init>[\d.]+) ms, min [\d.]+ ms; init \+ first invoke: median "
    r"(?P<invoke>[\d.]+) ms.*?over (?P<runs>\d+) runs; peak RSS (?P<rss>[\d.]+) MB; "
    r"answer (?P<answer>.*)$")


def cold_start(out_path, runs=5):
    results = {"arch": "x86_64", "runs": runs, "functions": {}}
    try:
        ledger, state, queue_url = create_resources()
        secret_arn = create_secret()
    except (KeyError, OSError, RuntimeError) as error:
        results["error"] = f"emulator resources: {error}"
        ledger, state, queue_url = "perf-cold-start-ledger", "perf-cold-start-state", ""
        secret_arn = ""
    body = open(os.path.join(FIXTURES, "07-sentMessageDELIVERED.json"), "rb").read()
    env = dict(os.environ, LEDGER_TABLE=ledger, STATE_TABLE=state, QUEUE_URL=queue_url,
               SECRET_ARN=secret_arn)
    for function in ("receiver", "processor"):
        zip_path = os.path.join(LAMBDA_DIR, "x86_64", function, "bootstrap.zip")
        entry = results["functions"].setdefault(function, {})
        if not os.path.exists(zip_path):
            entry["error"] = "no zip: run `make build` first"
            continue
        entry["zip_mtime"] = os.path.getmtime(zip_path)
        with tempfile.TemporaryDirectory() as work:
            with zipfile.ZipFile(zip_path) as archive:
                archive.extract("bootstrap", work)
            binary = os.path.join(work, "bootstrap")
            os.chmod(binary, os.stat(binary).st_mode | stat.S_IXUSR)
            event_path = os.path.join(work, "event.json")
            with open(event_path, "w") as event_file:
                json.dump(function_event(function, body), event_file)
            try:
                done = subprocess.run(
                    [sys.executable, os.path.join(ROOT, "scripts", "measure-init.py"), binary,
                     event_path, str(runs)],
                    env=env, capture_output=True, text=True, timeout=300)
            except subprocess.TimeoutExpired:
                entry["error"] = "measure-init.py timed out"
                continue
        line = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
        entry["line"] = line
        match = INIT_LINE.search(line)
        if done.returncode != 0 or not match:
            entry["error"] = (done.stderr.strip() or line or "no output")[-300:]
            continue
        entry.update(init_ms=float(match["init"]), invoke_ms=float(match["invoke"]),
                     rss_mb=float(match["rss"]), answer=match["answer"])
    with open(out_path, "w") as out:
        json.dump(results, out, indent=2)
    for function, entry in results["functions"].items():
        print(f"cold start {function}: {entry.get('line') or entry.get('error')}")


# -------------------------------------------------------------------------------------- report

def run(*command):
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=30).stdout.strip()
    except OSError:
        return ""


def machine():
    cpu = "unknown"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    with open("/proc/meminfo") as info:
        for line in info:
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    with open("/proc/loadavg") as info:
        load = " / ".join(info.read().split()[:3])
    return [
        ("CPU", cpu),
        ("cores (`nproc`)", run("nproc")),
        ("memory", memory),
        ("kernel", f"{platform.system()} {platform.release()} ({platform.machine()})"),
        ("rustc", run("rustc", "--version")),
        ("load average (1 / 5 / 15 min) when the report was written", load),
    ]


def results_line(path):
    """key=value pairs of the last `RESULT ...` line of a bench's output, or None."""
    if not os.path.exists(path):
        return None
    found = None
    with open(path, errors="replace") as output:
        for line in output:
            if line.startswith("RESULT "):
                found = dict(part.split("=", 1) for part in line.split()[1:] if "=" in part)
    return found


def criterion_ns(bench):
    path = os.path.join(CRITERION, bench, "new", "estimates.json")
    if not os.path.exists(path):
        return None
    with open(path) as estimates:
        return json.load(estimates)["mean"]["point_estimate"]


def verdict(ok):
    return "met" if ok else "**missed**"


def fmt_mb(size):
    return f"{size / MB:.2f} MB"


def report(raw_dir, seconds, failed):
    fixtures = len(glob.glob(os.path.join(FIXTURES, "*.json")))
    rows = []  # (figure, value, budget, verdict)

    # In-process work.
    per_webhook = criterion_ns("per_webhook_all_fixtures")
    if per_webhook is None:
        rows.append(("in-process work per webhook (auth + parse + key + record build)",
                     "no result (the `in_process` bench did not run)",
                     f"≤ {BUDGET_PER_WEBHOOK_US:.0f} µs", "**missed**"))
    else:
        us = per_webhook / fixtures / 1000
        rows.append(("in-process work per webhook (auth + parse + key + record build), "
                     f"mean over the {fixtures} fixtures", f"{us:.2f} µs",
                     f"≤ {BUDGET_PER_WEBHOOK_US:.0f} µs", verdict(us <= BUDGET_PER_WEBHOOK_US)))
    for bench, label in STEPS:
        ns = criterion_ns(bench)
        value = "no result" if ns is None else f"{ns / fixtures / 1000:.2f} µs"
        rows.append((f"… {label}", value, "—", "—"))
    ns = criterion_ns(PROCESSOR_STEP[0])
    rows.append((PROCESSOR_STEP[1], "no result" if ns is None else f"{ns / fixtures / 1000:.2f} µs",
                 "—", "—"))

    # AWS path on the emulators.
    aws = results_line(os.path.join(raw_dir, "load_aws.txt"))
    if aws is None:
        rows.append(("receiver overhead over the bare PutItem + SendMessage (p50 / p50)",
                     "no result (`load_aws` did not run)", f"≤ {BUDGET_OVERHEAD}", "**missed**"))
    else:
        overhead = float(aws["overhead_p50"])
        setup = f"{aws['requests']} events, concurrency {aws['concurrency']}"
        rows.append((f"receiver overhead over the bare PutItem + SendMessage, p50 / p50 "
                     f"(emulators, {setup})",
                     f"{overhead:.3f} (receiver p50 {float(aws['receiver_p50_ms']):.2f} ms, "
                     f"floor p50 {float(aws['floor_p50_ms']):.2f} ms)",
                     f"≤ {BUDGET_OVERHEAD}", verdict(overhead <= BUDGET_OVERHEAD)))
        rows.append((f"receiver accept rate on the emulators ({setup})",
                     f"{float(aws['receiver_per_s']):,.0f}/s (floor "
                     f"{float(aws['floor_per_s']):,.0f}/s), p99 "
                     f"{float(aws['receiver_p99_ms']):.2f} ms", "—", "—"))
        batch_p50 = float(aws["processor_batch_p50_ms"])
        rows.append(("processor events/s on the emulators (batches of 10, incl. SQS "
                     "receive/delete)",
                     f"{float(aws['processor_per_s']):,.0f}/s ({aws['applied']} events; apply "
                     f"alone p50 {batch_p50:.2f} ms per batch of 10, "
                     f"≈ {10_000 / batch_p50:,.0f} events/s)", "—", "—"))

    # Local server: the budget is a sustained rate (open loop), the closed loops show the peak.
    runs = sorted(glob.glob(os.path.join(raw_dir, "load_local_rate_*.txt")),
                  key=lambda path: int(path.rsplit("_", 1)[1].split(".")[0]))
    results = [found for found in map(results_line, runs) if found is not None]
    budget = f"≥ {BUDGET_LOCAL_RATE:,.0f}/s sustained, p99 ≤ {BUDGET_LOCAL_P99_MS:.0f} ms"
    label = "local server, open loop: webhooks offered at a fixed rate, accept p99"
    if not results or len(results) < len(runs):
        rows.append((label, "no result (`load_local` did not run or failed)", budget,
                     "**missed**"))
    else:
        # Judged on the median run by p99; every run is listed beside it.
        local = sorted(results, key=lambda found: float(found["p99_ms"]))[len(results) // 2]
        offered, requests = float(local["rate"]), int(local["requests"])
        accepted, failures = int(local["accepted"]), int(local["failed"])
        rate, p99 = float(local["accepted_per_s"]), float(local["p99_ms"])
        ok = open_loop_met(local)
        every_run = ", ".join(f"{float(found['p99_ms']):.2f}" for found in results)
        disk = local.get("disk_bytes_per_event")
        disk_note = f"; {float(disk) / 1024:.1f} KiB written to disk per webhook" if disk else ""
        rows.append((f"{label} ({offered:,.0f}/s for {requests / offered:.0f} s, "
                     f"{requests:,} requests; median of {len(results)} runs by p99)",
                     f"{accepted:,} accepted, {failures} failed, {rate:,.0f}/s over the run; "
                     f"p99 {p99:.2f} ms (p50 {float(local['p50_ms']):.2f} ms, max "
                     f"{float(local['max_ms']):.2f} ms; p99 of each run: {every_run} ms"
                     f"{disk_note})", budget, verdict(ok)))
    without_forwarding = local if results and len(results) == len(runs) else None
    rows += forwarding_rows(raw_dir, without_forwarding)
    for concurrency in (16, 64):
        local = results_line(os.path.join(raw_dir, f"load_local_c{concurrency}.txt"))
        label = f"local server, closed loop at concurrency {concurrency}: peak accepted/s"
        if local is None:
            rows.append((label, "no result (`load_local` did not run)", "—", "—"))
            continue
        rows.append((f"{label} ({local['requests']} requests, {local['failed']} failed)",
                     f"{float(local['accepted_per_s']):,.0f}/s, p99 {float(local['p99_ms']):.2f} ms "
                     f"(p50 {float(local['p50_ms']):.2f} ms)", "—", "—"))

    # Cold start: zip sizes.
    for arch in ARCHES:
        for function in FUNCTIONS:
            path = os.path.join(LAMBDA_DIR, arch, function, "bootstrap.zip")
            label = f"cold start: {function} zip, {arch}"
            if not os.path.exists(path):
                rows.append((label, "run `make build` first", f"≤ {BUDGET_ZIP_MB:.0f} MB", "—"))
                continue
            size = os.path.getsize(path)
            built = datetime.datetime.fromtimestamp(os.path.getmtime(path), datetime.UTC)
            rows.append((f"{label} (built {built:%Y-%m-%d %H:%M} UTC)", fmt_mb(size),
                         f"≤ {BUDGET_ZIP_MB:.0f} MB", verdict(size <= BUDGET_ZIP_MB * MB)))

    # Cold start: init and peak RSS.
    cold_path = os.path.join(raw_dir, "cold_start.json")
    cold = json.load(open(cold_path)) if os.path.exists(cold_path) else {"functions": {}}
    for function in ("receiver", "processor"):
        entry = cold["functions"].get(function)
        init_label = f"cold start: {function} init (process start → first poll), x86_64"
        rss_label = f"cold start: {function} peak RSS (init + first invoke), x86_64"
        if entry is None or "init_ms" not in entry:
            why = "run `make build` first" if entry is None or "no zip" in entry.get(
                "error", "") else f"not measured: {entry.get('error', '')}"
            rows.append((init_label, why, f"≤ {BUDGET_INIT_MS:.0f} ms", "—"))
            rows.append((rss_label, why, f"≤ {BUDGET_RSS_MB:.0f} MB", "—"))
            continue
        runs = cold.get("runs", "?")
        rows.append((f"{init_label}, median of {runs}",
                     f"{entry['init_ms']:.1f} ms (init + first invoke {entry['invoke_ms']:.1f} ms)",
                     f"≤ {BUDGET_INIT_MS:.0f} ms", verdict(entry["init_ms"] <= BUDGET_INIT_MS)))
        rows.append((rss_label, f"{entry['rss_mb']:.1f} MB", f"≤ {BUDGET_RSS_MB:.0f} MB",
                     verdict(entry["rss_mb"] <= BUDGET_RSS_MB)))

    lines = [
        "# Performance",
        "",
        "Generated by `make bench` (`scripts/bench.sh`, `scripts/performance-report.py`): "
        "figures of one run on the machine below. Re-run `make bench` to refresh this page.",
        "",
        f"- date: {run('date', '-u')}",
    ]
    if seconds is not None:
        lines.append(f"- `make bench` took {seconds // 60} min {seconds % 60} s")
    if failed:
        lines.append(f"- **stages that failed**: {', '.join(failed)} (their rows say no result)")
    lines += ["", "## Machine", "", "| | |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in machine()]
    lines += [
        "",
        "## Figures against their budgets",
        "",
        "| figure | value | budget | |",
        "|---|---|---|---|",
    ]
    lines += [f"| {figure} | {value} | {budget} | {ok} |" for figure, value, budget, ok in rows]
    lines += processor_calls_section(raw_dir)
    lines += [
        "",
        "How each figure is measured:",
        "",
        f"- **In-process** (`benches/in_process.rs`, criterion, mean): one iteration runs the step "
        f"over all {fixtures} bodies in `tests/fixtures/events/`; the time shown is that mean "
        "divided by the number of fixtures. No I/O: what the receiver does per webhook before "
        "its ledger write and its enqueue, and what the processor does per event besides its "
        "store calls. Raw estimates: `target/criterion/in_process/*/new/estimates.json`.",
        "- **Receiver overhead** (`benches/load_aws.rs`, DynamoDB Local + moto SQS): median "
        "time from request to `200` through the receiver's router, over the median of the bare "
        "conditional `PutItem` + `SendMessage` with the same clients.",
        "- **Local throughput** (`benches/load_local.rs`): distinct webhooks over HTTP to the "
        "local server (SQLite, fsync'd group commit, the local processor applying them at the "
        "same time; each webhook names a new message, 10 consecutive ones share a contact, and "
        "each change also announces its contact's whole view) with the client in the same "
        "process on the same cores: a bounded "
        "HTTP/1.1 keep-alive client like wrk's (requests prepared before the clock starts, "
        "each response read to its `Content-Length` and judged by its status line), which leaves "
        "more of the 2 cores to the server than reqwest did. The budget row is "
        "an open loop: requests start on a fixed schedule whether or not earlier ones were "
        "answered, and each latency counts from its scheduled start, so falling behind shows "
        "(no coordinated omission); met when every request is accepted, the run ends within "
        "1% of the schedule and p99 is within budget; it runs `LOAD_RATE_RUNS` (5) times and the "
        "run with the median p99 is judged. Disk bytes per webhook come from `/proc/self/io` "
        "(WAL, checkpoints and the processor's writes together). The closed loops (each of 16 or 64 "
        "clients sends its next request when answered) give the peak rate; their latency is "
        "mostly queueing (Little's law: concurrency / rate).",
        "- **Local forwarding** (`benches/load_local.rs` with `LOAD_FORWARD=1`): the same server "
        "with `FORWARD_URL` set (the documented `ForwardSchedule`: 32 changes in flight, 10 s "
        "timeout) pointing at an HTTP receiver in the same process (axum, answers `204` at once, "
        "records when each document arrives by its `webhook-id` and `message.id`). Open loop at "
        "1,000 webhooks/s for 10 s: a webhook's change lag is the arrival of the first document "
        "naming its message minus the instant its `200` reached the client; the bench then waits "
        "up to 60 s for every change of the outbox to be delivered, and a message whose change "
        "has not arrived by then counts as longer than any lag in the percentiles (and fails the "
        "budget). Then one more open loop at the accept budget's rate with forwarding on "
        "(waiting 10 s for the forwards afterwards), judged like the runs without it.",
        "- **Changes out on AWS**: the notifier's calls counted by its end-to-end test on the "
        "emulators (below).",
        "- **Cold start**: zip sizes of `target/lambda/<arch>/<function>/bootstrap.zip` "
        f"(`make build`; MB = {MB:,} bytes). Init and peak RSS by `scripts/measure-init.py` "
        "(a local Lambda Runtime API) on the x86_64 binaries, the arm64 ones cannot run here, "
        "against the emulators over plain HTTP; the receiver's first invocation is one "
        "fixture webhook, the processor's an SQS batch of one.",
        "",
        f"Raw outputs of the last run: `{os.path.relpath(raw_dir, ROOT)}/`.",
        "",
        cost_section(ASSUMED_RECEIVER_MS, ASSUMED_PROCESSOR_BATCH_MS, state_wru_per_event(raw_dir),
                     state_rru_per_event(raw_dir)),
        notifier_cost_section(raw_dir),
        WINDOW_TIMER_SECTION,
    ]
    with open(OUTPUT, "w") as out:
        out.write("\n".join(lines))
    print(f"wrote {os.path.relpath(OUTPUT, ROOT)}")
    for figure, value, budget, ok in rows:
        print(f"  {figure}: {value} [{budget}] {ok}")


def open_loop_met(found):
    """The accept budget of an open-loop run: it kept pace (every request accepted, the last one
    within 1% of the schedule's length) at the budget's rate or more, with p99 within budget."""
    offered, requests = float(found["rate"]), int(found["requests"])
    accepted, failures = int(found["accepted"]), int(found["failed"])
    return (offered >= BUDGET_LOCAL_RATE and accepted == requests and failures == 0
            and float(found["accepted_per_s"]) >= 0.99 * offered
            and float(found["p99_ms"]) <= BUDGET_LOCAL_P99_MS)


def fmt_lag(found, key):
    """A change lag of a forwarding run: ms, or why there is none."""
    value = float(found.get(key, "nan"))
    if value == float("inf"):
        return "not arrived in time"
    if value != value:  # NaN: no change arrived at all
        return "no change arrived"
    return f"{value:,.0f} ms" if value >= 100 else f"{value:.1f} ms"


def forwarding_rows(raw_dir, without_forwarding):
    """Local forwarding (`LOAD_FORWARD=1`): change lag at 1,000 webhooks/s, and the accept budgets
    with forwarding on (the same budgets as without)."""
    rows = []
    lag_run = results_line(os.path.join(raw_dir, "load_local_forward_lag.txt"))
    lag_label = "local forwarding: change lag, 200 to the first document of the message at " \
                "a receiver (open loop"
    lag_budget = (f"p99 ≤ {BUDGET_CHANGE_LAG_P99_MS / 1000:.0f} s at "
                  f"≥ {BUDGET_FORWARD_RATE:,.0f} webhooks/s, none missing")
    accept_budget = f"p99 ≤ {BUDGET_LOCAL_P99_MS:.0f} ms (the accept budget)"
    if lag_run is None or lag_run.get("forward") != "1":
        rows.append((lag_label + ")", "no result (`load_local` with `LOAD_FORWARD=1` did not run)",
                     lag_budget, "**missed**"))
        rows.append(("local forwarding: accept latency of the same run", "no result",
                     accept_budget, "**missed**"))
    else:
        offered, requests = float(lag_run["rate"]), int(lag_run["requests"])
        messages, missing = int(lag_run["messages"]), int(lag_run["missing"])
        p99 = float(lag_run["lag_p99_ms"])
        ok = (offered >= BUDGET_FORWARD_RATE and int(lag_run["accepted"]) == requests
              and missing == 0 and p99 <= BUDGET_CHANGE_LAG_P99_MS)
        drained = "" if lag_run.get("forward_drained") == "1" else " (gave up waiting)"
        rows.append((
            f"{lag_label} at {offered:,.0f}/s for {requests / offered:.0f} s, {requests:,} "
            f"webhooks, every change forwarded)",
            f"p99 {fmt_lag(lag_run, 'lag_p99_ms')} (p50 {fmt_lag(lag_run, 'lag_p50_ms')}, p95 "
            f"{fmt_lag(lag_run, 'lag_p95_ms')}, max of those that arrived "
            f"{fmt_lag(lag_run, 'lag_max_ms')}); {messages - missing:,} of {messages:,} messages' "
            f"changes arrived, {missing:,} missing; {int(lag_run['delivered']):,} of "
            f"{int(lag_run['outbox']):,} changes delivered "
            f"{float(lag_run['forward_drain_s']):.0f} s after the last accept{drained}, "
            f"{float(lag_run.get('delivered_per_s', 'nan')):,.0f} delivered/s",
            lag_budget, verdict(ok)))
        lag_p99 = float(lag_run["p99_ms"])
        rows.append((
            f"local forwarding: accept latency of the same run ({offered:,.0f}/s)",
            f"p99 {lag_p99:.2f} ms (p50 {float(lag_run['p50_ms']):.2f} ms, max "
            f"{float(lag_run['max_ms']):.2f} ms), {int(lag_run['accepted']):,} accepted, "
            f"{lag_run['failed']} failed", accept_budget,
            verdict(int(lag_run["accepted"]) == requests and lag_p99 <= BUDGET_LOCAL_P99_MS)))
    accept = results_line(os.path.join(raw_dir, "load_local_forward_accept.txt"))
    label = "local server with forwarding on, open loop: accept p99"
    budget = f"≥ {BUDGET_LOCAL_RATE:,.0f}/s sustained, p99 ≤ {BUDGET_LOCAL_P99_MS:.0f} ms (as without)"
    if accept is None or accept.get("forward") != "1":
        rows.append((label, "no result (`load_local` with `LOAD_FORWARD=1` did not run)", budget,
                     "**missed**"))
        return rows
    offered, requests = float(accept["rate"]), int(accept["requests"])
    compare = ""
    if without_forwarding is not None:
        compare = (f"; without forwarding (median run above): p99 "
                   f"{float(without_forwarding['p99_ms']):.2f} ms, p50 "
                   f"{float(without_forwarding['p50_ms']):.2f} ms")
    rows.append((
        f"{label} ({offered:,.0f}/s for {requests / offered:.0f} s, {requests:,} requests; one run)",
        f"{int(accept['accepted']):,} accepted, {accept['failed']} failed, "
        f"{float(accept['accepted_per_s']):,.0f}/s over the run; p99 {float(accept['p99_ms']):.2f} ms "
        f"(p50 {float(accept['p50_ms']):.2f} ms, max {float(accept['max_ms']):.2f} ms){compare}; "
        f"{int(accept['delivered']):,} of {int(accept['outbox']):,} changes forwarded "
        f"{float(accept['forward_drain_s']):.0f} s after the last accept",
        budget, verdict(open_loop_met(accept))))
    return rows


def write_units(calls):
    """WRU of one path's calls for items under 1 KB: a plain write is 1, a transaction 2 per item."""
    return calls.get("UpdateItem", 0) + calls.get("PutItem", 0) + 2 * calls.get("TransactItems", 0)


def processor_calls(raw_dir):
    path = os.path.join(raw_dir, "processor_calls.json")
    return json.load(open(path)) if os.path.exists(path) else None


def processor_calls_section(raw_dir):
    """The DynamoDB calls per processor path, from the contract test that asserts them."""
    rows = processor_calls(raw_dir)
    out = ["", "## State writes per event, by processor path", ""]
    if rows is None:
        return out + ["No result: `e2e::aws_calls_per_processor_path` did not run."]
    out += [
        "Counted on the wire by `tests/contract/e2e.rs` (`aws_calls_per_processor_path`, which "
        "asserts these exact numbers) against DynamoDB Local. A write refused on its condition "
        "is billed like one that succeeds; a transaction costs 2 WRU per item it writes. The "
        "receiver makes one conditional `PutItem` and one `SendMessage` per request on every "
        "path (`aws_calls_per_receive_path`), with no reads. After its writes, every applied "
        "event reads its message back (strongly consistent `BatchGetItem`, one round per step "
        "of its edges; each id is asked as a message item and as an alias of the earlier "
        "model) and, when the message names a contact, adds its snapshot to its contact "
        "summary's bucket (one `UpdateItem` per contact name, counted in the first column; "
        "`src/store/dynamo_state/summary.rs`). An event of a message that names both a phone "
        "number and a BSUID, unless the event named both itself, reads the two halves of their "
        "contact link (one more strongly consistent `BatchGetItem` of 2 keys) and puts "
        "whichever is missing (`PutItem`). RRU: 1 per key asked (strongly consistent, items "
        "under 4 KB).",
        "",
        "| path | UpdateItem | PutItem | TransactWriteItems (items) | BatchGetItem (keys) | WRU | RRU |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        calls = row["calls"]
        update, put, tx, items, gets, keys = (calls.get(name, 0) for name in
                                              ("UpdateItem", "PutItem", "TransactWriteItems",
                                               "TransactItems", "BatchGetItem", "BatchGetKeys"))
        out.append(f"| {row['path']} | {update} | {put} | {tx} ({items}) | {gets} ({keys}) "
                   f"| {write_units(calls)} | {read_units(calls)} |")
    return out


def read_units(calls):
    """RRU of one path's strongly consistent reads: 1 per key asked (items under 4 KB)."""
    return calls.get("BatchGetKeys", 0)


def state_wru_per_event(raw_dir):
    """State WRU per event of a typical outbound message, from the counted paths: its first event
    links Wati's id and the wamid, its first v2 event adds the local id, and its other events
    (4-8: v1 and v2 of sent, delivered, read) find the links written. Falls back to the same
    mix with the counts asserted today when the test did not run. Index writes come on top
    (the by_contact GSI projects ALL: one more WRU for each write of a home item)."""
    first, local, known, events = typical_message_paths(raw_dir)
    total = write_units(first) + write_units(local) + (events - 2) * write_units(known)
    index = events  # each event writes its home item once, which the GSI copies
    return (total + index) / events


def typical_message_paths(raw_dir):
    """The counted calls of a typical outbound message's first event, first v2 event and each
    later event, and its number of events (the counts asserted today when the test did not
    run)."""
    rows = processor_calls(raw_dir) or []
    by_path = {row["path"]: row["calls"] for row in rows}
    first = by_path.get("first event of a message (Wati id, wamid, phone)",
                        {"UpdateItem": 2, "TransactWriteItems": 1, "TransactItems": 2,
                         "BatchGetItem": 2, "BatchGetKeys": 4})
    local = by_path.get("next status, first to carry the sender's local id",
                        {"UpdateItem": 2, "TransactWriteItems": 1, "TransactItems": 3,
                         "BatchGetItem": 2, "BatchGetKeys": 6})
    known = by_path.get("a later status of a known message",
                        {"UpdateItem": 2, "BatchGetItem": 2, "BatchGetKeys": 6})
    return first, local, known, 8


def state_rru_per_event(raw_dir):
    """Strongly consistent RRU per event of the typical message: its read-back after each write."""
    first, local, known, events = typical_message_paths(raw_dir)
    return (read_units(first) + read_units(local) + (events - 2) * read_units(known)) / events


# Durations on AWS, where a DynamoDB or SQS call takes a few milliseconds (the emulators here are
# far slower, so their durations would overstate Lambda's bill). The receiver issues its PutItem
# (~5 ms) and SendMessage (~10 ms) together: about the slower of the two plus the invocation,
# 12 ms (it was 20 ms, their sum, while they went one after the other). Estimates.
ASSUMED_RECEIVER_MS = 12
ASSUMED_PROCESSOR_BATCH_MS = 50

# --- AWS cost per million events -------------------------------------------------------------
# List prices, us-east-1, on-demand, as of 2026 (https://aws.amazon.com/<service>/pricing/).
PRICE = {
    "http_api_request": 1.00 / 1e6,        # API Gateway HTTP API, first 300 M requests/month
    "lambda_request": 0.20 / 1e6,
    "lambda_gb_s_arm64": 0.0000133334,
    "dynamodb_wru": 0.625 / 1e6,           # on-demand write request unit
    "dynamodb_rru": 0.125 / 1e6,
    "dynamodb_gb_month": 0.25,
    "sqs_request": 0.40 / 1e6,             # standard queue, per 64 KB chunk
    "logs_gb": 0.50,                       # CloudWatch Logs ingestion
}
MEMORY_GB = 128 / 1024                      # template.yaml Globals.MemorySize

# Calls per event, as counted by tests/contract/e2e.rs (aws_calls_per_receive_path and
# every_event_type_end_to_end): the receiver makes 1 conditional PutItem and 1 SendMessage; the
# processor 1 UpdateItem per message event (+1 index write: the by_contact GSI projects ALL), and
# writes each message's aliases (wamid, local id) and contact link once: about 0.5 PutItem per
# event when a message has 3-4 callbacks. Wati bodies are 1-2 KB: a ledger write is 2 WRU.
def cost_rows(receiver_ms, processor_batch_ms, log_kb_per_event, state_wru, state_rru):
    per_event = {}
    receiver_gb_s = max(1.0, receiver_ms) / 1000 * MEMORY_GB
    processor_gb_s = max(1.0, processor_batch_ms) / 1000 * MEMORY_GB / 10  # batches of 10
    per_event["Receiver Lambda (requests + duration)"] = (
        PRICE["lambda_request"] + receiver_gb_s * PRICE["lambda_gb_s_arm64"])
    per_event["Ledger PutItem (2 WRU)"] = 2 * PRICE["dynamodb_wru"]
    per_event["Ledger storage (1.5 KB x 7-day TTL)"] = (
        1.5e-6 * PRICE["dynamodb_gb_month"] * 7 / 30)
    per_event["SQS: SendMessage + 1/10 Receive + 1/10 DeleteMessageBatch"] = 1.2 * PRICE["sqs_request"]
    per_event["Processor Lambda (1/10 invocation + duration)"] = (
        PRICE["lambda_request"] / 10 + processor_gb_s * PRICE["lambda_gb_s_arm64"])
    per_event["State writes: %.2f WRU per event (counted paths, typical message of 8 events, GSI included)"
              % state_wru] = state_wru * PRICE["dynamodb_wru"]
    per_event["State read-back: %.2f RRU per event (strongly consistent, to file the contact summary)"
              % state_rru] = state_rru * PRICE["dynamodb_rru"]
    per_event["CloudWatch Logs (%.1f KB/event incl. platform lines, EMF)" % log_kb_per_event] = (
        log_kb_per_event / 1e6 * PRICE["logs_gb"])
    return per_event


def cost_section(receiver_ms, processor_batch_ms, state_wru, state_rru, log_kb_per_event=1.2):
    rows = cost_rows(receiver_ms, processor_batch_ms, log_kb_per_event, state_wru, state_rru)
    million = 1e6
    base = sum(rows.values()) * million
    http_api = PRICE["http_api_request"] * million
    powertools_extra = 2 * PRICE["dynamodb_wru"] * million  # a second ledger write per event
    out = ["## AWS cost per million events", ""]
    out.append(
        "At the deployed defaults (arm64, 128 MB, batches of 10), from the calls the end-to-end "
        f"tests count and durations of {receiver_ms:.0f} ms per receiver invocation and "
        f"{processor_batch_ms:.0f} ms per processor batch (assumed for AWS, where a DynamoDB or "
        "SQS call takes a few ms; the emulators are far slower). A duplicate costs one more "
        "PutItem (a failed conditional write is billed), SendMessage and apply.")
    out.append("")
    out.append("| item | USD per million events |")
    out.append("|---|---|")
    for name, value in rows.items():
        out.append(f"| {name} | {value * million:.2f} |")
    out.append(f"| API Gateway HTTP API request | {http_api:.2f} (Function URL: 0.00) |")
    out.append("")
    out.append("| design | HTTP API | Function URL |")
    out.append("|---|---|---|")
    out.append(f"| wati-ingest (one ledger write per event) | **{base + http_api:.2f}** | **{base:.2f}** |")
    out.append(
        f"| Powertools-style idempotency (INPROGRESS then COMPLETED: two ledger writes) | "
        f"{base + http_api + powertools_extra:.2f} | {base + powertools_extra:.2f} |")
    out.append("")
    return "\n".join(out)


# --- Changes out (the notifier): calls counted on the emulators, list prices ------------------
NOTIFIER_PRICE = {
    "put_events_entry": 1.00 / 1e6,        # EventBridge custom events, per 64 KB chunk of an entry
    "archive_gb": 0.10,                     # EventBridge archive, per GB archived
    "api_destination": 0.20 / 1e6,          # per invocation of an API destination
}
# Not measurable on the emulators (they are far slower than AWS): assumed, labelled as such.
NOTIFIER_ASSUMED = {
    "record_ms": 10,         # Lambda time per record: 8 records at once, ~40 ms of DynamoDB calls each
    "records_per_batch": 10, # batching window 1 s at low traffic (100 at most)
    "window_index_wru": 2,   # a window item's write moves its entry in the by_next_due index
}


def notifier_calls(raw_dir):
    path = os.path.join(raw_dir, "notifier_calls.json")
    return json.load(open(path)) if os.path.exists(path) else None


def notifier_per_change(counted):
    """Per stream record with changes, on its first delivery: the counted calls and units."""
    records = counted["records_with_changes"]
    dynamodb = counted["first_deliveries"]["dynamodb"]
    bus = counted["first_deliveries"]["eventbridge"]
    calls = dynamodb["calls"]
    return {
        "BatchGetItem": calls.get("BatchGetItem", 0) / records,
        "BatchGetItem strongly consistent": dynamodb["batch_get_strong"] / records,
        "keys asked, strongly consistent": dynamodb["keys_strong"] / records,
        "keys asked, eventually consistent": dynamodb["keys_eventual"] / records,
        "Query": calls.get("Query", 0) / records,
        "items read": dynamodb["items_read"] / records,
        "RRU": dynamodb["read_units"] / records,
        "UpdateItem (window item)": calls.get("UpdateItem", 0) / records,
        "PutEvents calls": bus["PutEvents"] / records,
        "PutEvents entries": bus["entries"] / records,
        "PutEvents billed events (64 KB chunks)": bus["billed_events"] / records,
        "bytes per entry": bus["entry_bytes"] / max(1, bus["entries"]),
    }


def notifier_cost_rows(per):
    a = NOTIFIER_ASSUMED
    rows = {}
    rows["PutEvents: %.2f entries (%.2f billed 64 KB events)"
         % (per["PutEvents entries"], per["PutEvents billed events (64 KB chunks)"])] = (
        per["PutEvents billed events (64 KB chunks)"] * NOTIFIER_PRICE["put_events_entry"])
    rows["DynamoDB reads: %.1f RRU (%.2f BatchGetItem, %.2f Query; %.1f items)"
         % (per["RRU"], per["BatchGetItem"], per["Query"], per["items read"])] = (
        per["RRU"] * PRICE["dynamodb_rru"])
    window_wru = per["UpdateItem (window item)"] * (1 + a["window_index_wru"])
    rows["Window item writes: %.2f UpdateItem x (1 WRU + up to %d on the due index)"
         % (per["UpdateItem (window item)"], a["window_index_wru"])] = window_wru * PRICE["dynamodb_wru"]
    rows["Notifier Lambda (assumed %d ms per record at 128 MB, 1/%d invocation)"
         % (a["record_ms"], a["records_per_batch"])] = (
        PRICE["lambda_request"] / a["records_per_batch"]
        + a["record_ms"] / 1000 * MEMORY_GB * PRICE["lambda_gb_s_arm64"])
    rows["Stream reads (GetRecords by the Lambda trigger)"] = 0.0
    kb = per["PutEvents entries"] * per["bytes per entry"] / 1000
    rows["Archive (%.2f entries x %.2f KB)" % (per["PutEvents entries"], per["bytes per entry"] / 1000)] = (
        kb / 1e6 * NOTIFIER_PRICE["archive_gb"])
    return rows


def notifier_cost_section(raw_dir):
    counted = notifier_calls(raw_dir)
    out = ["## Changes out: AWS calls and cost per change", ""]
    if counted is None:
        out += ["No result: `notifier::notifier_announces_every_change_once_per_id` (the "
                "notifier's end-to-end test on the emulators, which writes "
                "`notifier_calls.json`) did not run.", ""]
        return "\n".join(out)
    per = notifier_per_change(counted)
    rows = notifier_cost_rows(per)
    million = 1e6
    total = sum(rows.values()) * million
    forward = per["PutEvents entries"] * NOTIFIER_PRICE["api_destination"] * million
    first = counted["first_deliveries"]
    again = counted["redeliveries"]
    out.append(
        "Calls counted on the wire by `tests/contract/notifier.rs` "
        "(`notifier_announces_every_change_once_per_id`) on the emulators (DynamoDB Local's "
        "stream, moto EventBridge): the fixtures applied through the processor, the stream read "
        "and handed to the notifier's handler in batches of 7 records. A *change* here is one "
        "stream record with changes: one message item's write that gained a fact; the figures "
        "are the first delivery of each batch divided by those records (each batch is delivered "
        "again, as after a crash; the redelivery costs the same again). Read units are billed as "
        "DynamoDB does, from the sizes of the items each read returned: a BatchGetItem key 1 RRU "
        "per 4 KB strongly consistent, 0.5 eventually (a key without an item still 1 unit), a "
        "Query 0.5 RRU per 4 KB of the items it returned (at least one unit).")
    out.append("")
    out.append(
        f"Measured: {counted['fixtures']} fixture webhooks, {counted['deliveries']} deliveries with "
        f"duplicates, made {counted['stream_records']} stream records, "
        f"{counted['records_with_changes']} of them with changes; their first deliveries made "
        f"{sum(first['dynamodb']['calls'].values())} DynamoDB calls "
        f"({', '.join(f'{n} {op}' for op, n in sorted(first['dynamodb']['calls'].items()))}), "
        f"{first['eventbridge']['PutEvents']} PutEvents of {first['eventbridge']['entries']} "
        f"entries ({counted['distinct_documents']} distinct documents, "
        f"{counted['message_updated']} `message.updated`); the redeliveries "
        f"{sum(again['dynamodb']['calls'].values())} DynamoDB calls and "
        f"{again['eventbridge']['entries']} entries. Every webhook applied once more made "
        f"{counted['duplicates_again']['stream_records']} stream records and "
        f"{counted['duplicates_again']['eventbridge']['entries']} entries. Raw counts: "
        "`notifier_calls.json`.")
    out.append("")
    out.append("| per stream record with changes (first delivery) | counted |")
    out.append("|---|---|")
    for name, value in per.items():
        out.append(f"| {name} | {value:,.0f} |" if name == "bytes per entry"
                   else f"| {name} | {value:.2f} |")
    out.append("")
    out.append(
        "Prices: list prices, us-east-1, on-demand, 2026 (PutEvents $1.00 per million 64 KB "
        "events, archive $0.10 per GB, API destinations $0.20 per million invocations, DynamoDB "
        "$0.125 per million RRU and $0.625 per million WRU, Lambda arm64 $0.0000133334 per GB-s "
        "and $0.20 per million requests; stream reads are free for a Lambda trigger). Assumed, "
        "not measured: " + ", ".join(f"{k} = {v}" for k, v in NOTIFIER_ASSUMED.items()) + ".")
    out.append("")
    out.append("| item | USD per million changes |")
    out.append("|---|---|")
    for name, value in rows.items():
        out.append(f"| {name} | {value * million:.2f} |")
    out.append(f"| **total** | **{total:.2f}** |")
    out.append(f"| per million documents put ({per['PutEvents entries']:.2f} per change) "
               f"| {total / per['PutEvents entries']:.2f} |")
    out.append(f"| with forwarding (API destination, {per['PutEvents entries']:.2f} invocations) "
               f"| +{forward:.2f} |")
    out.append("")
    out.append(
        "The contact's reads grow with its history (every message it ever had is read, like "
        "`GET /v1/contacts`): the fixtures have 12 messages of 4 contacts, so a contact with "
        "a long history costs more reads per change than counted here. A stream record "
        "without changes (the write of another item, or one that gained no fact) makes no call: "
        "it costs only its share of the invocation. A "
        "`contact.updated` is built and put for every record with changes, even when its id was "
        "already sent (consumers drop it by `id`).")
    out.append("")
    return "\n".join(out)


# --- Window timer: the design's reasoning and its estimate (not generated from a run) ---------
WINDOW_TIMER_SECTION = """
## Window timer on AWS: why a sparse due-time index, and its cost (an estimate)

`contact.window_closing`/`contact.window_closed` need a timer (`src/windows.rs`, `infra/README.md`).
**Chosen:** window items on the state table, with a sparse `by_next_due` GSI over 16 shards,
written by the notifier (one conditional `UpdateItem` per record of a *customer's* message: only
those move a window) and drained every minute by the `windows` function (one `Query` per shard,
then per due window: the contact's view, one `PutEvents` entry, one conditional `UpdateItem`).

Why, under our rules (no read-modify-write, no read-your-own-write, no delete-and-recreate; every
write commutative, idempotent, safe to retry and reorder):
- Every write is one conditional `UpdateItem` whose condition makes it commutative: the end only
  moves forward (`window_end < :end`), a mark only applies to the end it announced
  (`window_end = :end`), a closing mark never undoes a close (`next_due < window_end`). A failed
  condition means "already so". Nothing is read before a write, nothing deleted.
- Batching: one run a minute serves every due window (16 queries of an index that holds only the
  windows still to announce). A quiet minute costs 16 × 0.5 RRU and one invocation.
- Only customer messages write the window item: statuses (most records) cost nothing extra. Writing
  it on every record with a view would add 1–3 WRU to each of them (≈ $1.7 per million events).
- **EventBridge Scheduler one-time schedules** (`at(...)`, $1.00 per million invocations after 14
  million free a month) were considered: every customer message would have to create two
  schedules (closing, closed) from the notifier. Moving one with `UpdateSchedule` is
  last-writer-wins (not conditional: an older stream record handled late would move a window
  backward), so schedules would have to be named by window end and the stale ones (a window moved
  by each further customer message) left to fire, each firing invoking a Lambda that must still
  check a window item to know it moved (deleting them needs the old end: a read before the
  write). That is the same window item and the same reads plus one schedule invocation and one
  Lambda invocation per schedule, unbatched, under the account's schedule quota (1 million by
  default: two per open window) and a second service to alarm on. It also fires on time to the
  second, which these documents do not need (a minute is within the lead time).

Inputs (labelled assumptions, not measured on AWS): us-east-1 list prices as above (DynamoDB
on-demand $0.625 per million WRU, $0.125 per million RRU; PutEvents $1.00 per million entries;
Lambda arm64 128 MB); 3 customer messages per window (each moves it: 1 WRU on the table + up to 2
on the index, as a changed `next_due` is a delete and a put in the GSI); the contact's view read as
the notifier reads it (contact of 10 messages: 25 RRU eventually consistent); items under 1 KB;
27 webhook events per window (3 customer messages, 3 replies of 8 callbacks each).

| item, per window (closing + closed) | USD per million windows |
|---|---|
| notifier: 3 × conditional `UpdateItem` (≤ 3 WRU each, index included) | 5.63 |
| 2 contact views (2 × 25 RRU) | 6.25 |
| 2 `PutEvents` entries | 2.00 |
| closing mark (1 WRU + 2 on the index) + close mark (1 WRU + 1 on the index) | 3.13 |
| `windows` function duration, due-index reads per window | 0.05 |
| **total** | **≈ 17.1** |
| per million webhook events (27 events per window) | **≈ 0.63** |
| fixed, whatever the volume: 43,200 runs a month, 16 queries each | ≈ $0.06 a month |

The same with Scheduler: the window item writes (without the index: ≈ 1.9), 6 schedules fired per
window (3 moves × 2; ≈ 6.0 for the invocations, ≈ 1.2 for their Lambda requests and checks), plus
the same 2 views and 2 entries (8.25): ≈ $17.4 per million windows, no cheaper, with more moving
parts.
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    cold = commands.add_parser("cold-start")
    cold.add_argument("out")
    cold.add_argument("--runs", type=int, default=5)
    rep = commands.add_parser("report")
    rep.add_argument("raw_dir")
    rep.add_argument("--seconds", type=int)
    rep.add_argument("--failed", nargs="*", default=[])
    args = parser.parse_args()
    if args.command == "cold-start":
        cold_start(args.out, args.runs)
    else:
        report(os.path.abspath(args.raw_dir), args.seconds, args.failed)


if __name__ == "__main__":
    main()
