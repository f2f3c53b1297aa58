#!/usr/bin/env bash
# Post every Wati webhook fixture to a running local wati-ingest (`make run`), in file order,
# like Wati's "Trigger sample callback" button, then read the resulting state back, and the
# change documents it announced (GET /v1/changes), one line each.
#
# Environment: PORT (default 3000), DATA_DIR (default ./.wati-ingest),
#              WEBHOOK_SECRET (default: $DATA_DIR/webhook_secret),
#              API_TOKEN (default: $DATA_DIR/api_token).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EVENTS_DIR="$ROOT/tests/fixtures/events"
PORT="${PORT:-3000}"
DATA_DIR="${DATA_DIR:-./.wati-ingest}"
BASE="http://127.0.0.1:${PORT}"

# Base time of the fixtures; it is shifted to (now - 600 s) so the demo's sessions look current.
T0=1764238453

die() {
    printf 'demo: %s\n' "$*" >&2
    exit 1
}

# read_credential NAME ENV_VALUE FILE -> prints the value, or fails with a hint.
read_credential() {
    local name="$1" value="$2" file="$3"
    if [[ -z "$value" ]]; then
        if [[ -r "$file" ]]; then
            value="$(tr -d '[:space:]' <"$file")"
        fi
    fi
    if [[ -z "$value" ]]; then
        die "no $name: set it in the environment or start the server first with \`make run\` (it writes $file)"
    fi
    printf '%s' "$value"
}

SECRET="$(read_credential WEBHOOK_SECRET "${WEBHOOK_SECRET:-}" "$DATA_DIR/webhook_secret")"
TOKEN="$(read_credential API_TOKEN "${API_TOKEN:-}" "$DATA_DIR/api_token")"

command -v curl >/dev/null || die "curl is required"
command -v python3 >/dev/null || die "python3 is required"

shopt -s nullglob
FILES=("$EVENTS_DIR"/*.json)
shopt -u nullglob
((${#FILES[@]} > 0)) || die "no fixtures found in $EVENTS_DIR"

OFFSET=$(($(date +%s) - 600 - T0))

# Rewrites one fixture: shifts a numeric-string "timestamp" by OFFSET, keeps it a string.
SHIFT_PY='
import json, sys
path, offset = sys.argv[1], int(sys.argv[2])
with open(path, encoding="utf-8") as f:
    event = json.load(f)
ts = event.get("timestamp") if isinstance(event, dict) else None
if isinstance(ts, str) and ts.isascii() and ts.isdigit():
    event["timestamp"] = str(int(ts) + offset)
sys.stdout.write(json.dumps(event, ensure_ascii=False))
'

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

unreachable() {
    die "cannot reach wati-ingest at $BASE; start the server first with \`make run\`"
}

# post FILE: prints "<file>  <http status>  <body>". The URL (which holds the secret) is passed
# to curl through a config on a file descriptor, so it shows up neither here nor in `ps`.
post() {
    local file="$1" name code body
    name="$(basename "$file")"
    python3 -c "$SHIFT_PY" "$file" "$OFFSET" >"$TMP/body.json"
    code="$(curl -sS -o "$TMP/resp" -w '%{http_code}' \
        -K <(printf 'url = "%s/webhook/%s"\n' "$BASE" "$SECRET") \
        -H 'Content-Type: application/json' \
        --data-binary @"$TMP/body.json")" || unreachable
    body="$(tr -d '\n' <"$TMP/resp")"
    printf '%-40s %s  %s\n' "$name" "$code" "$body"
}

# get PATH: GET with the bearer token, pretty-printed.
get() {
    local path="$1" code
    code="$(curl -sS -o "$TMP/resp" -w '%{http_code}' \
        -K <(printf 'url = "%s%s"\nheader = "Authorization: Bearer %s"\n' "$BASE" "$path" "$TOKEN"))" ||
        unreachable
    printf '\n== GET %s  (%s)\n' "$path" "$code"
    if ! python3 -m json.tool <"$TMP/resp" 2>/dev/null; then
        cat "$TMP/resp"
        printf '\n'
    fi
}

printf 'Posting %d Wati sample callbacks to %s/webhook/<secret> (T0 -> now-600s)\n\n' "${#FILES[@]}" "$BASE"
for file in "${FILES[@]}"; do
    post "$file"
done

DUP="$(printf '%s\n' "${FILES[@]}" | grep '/07-' | head -n 1 || true)"
if [[ -n "$DUP" ]]; then
    printf '\nRe-posting %s (Wati retries the same payload; expect "duplicate"):\n' "$(basename "$DUP")"
    post "$DUP"
fi

sleep 1

for path in \
    /v1/messages/6734a1b2c3d4e5f601000003 \
    /v1/messages/local-0005 \
    /v1/messages/wamid.OUT000000000000000000000004 \
    /v1/contacts/14155550101 \
    '/v1/contacts/14155550101?channel=14155550200' \
    /v1/contacts/14155550102; do
    get "$path"
done

# The changes the fixtures announced, one line each (the feed from its start; `wati-ingest tail`
# follows it live, `FORWARD_URL` pushes it).
SUMMARY_PY='
import json, sys
page = json.load(sys.stdin)
changes = page.get("changes", [])
def who(view):
    return "wa_id %s" % view["wa_id"] if view.get("wa_id") else "bsuid %s" % view.get("bsuid")
for c in changes:
    kind = c.get("type")
    if kind == "message.updated":
        m = c["message"]
        detail = "%s %s (%s)" % (c.get("fact"), m.get("id") or m.get("whatsapp_message_id"), who(m))
    elif "contact" in c:
        v = c["contact"]
        detail = "%s on %s: session %s, window %s" % (
            who(v), v.get("channel_phone_number") or "the default number",
            (v.get("session") or {}).get("state"),
            "open until %s" % v["window_expires_at"] if v.get("window_open") else "closed")
    else:
        detail = c.get("id")
    print("%s %s %s" % (c.get("recorded_at"), kind, detail))
print("(%d changes; next cursor %s)" % (len(changes), page.get("next")))
'
code="$(curl -sS -o "$TMP/resp" -w '%{http_code}' \
    -K <(printf 'url = "%s/v1/changes?limit=1000"\nheader = "Authorization: Bearer %s"\n' "$BASE" "$TOKEN"))" ||
    unreachable
printf '\n== GET /v1/changes?limit=1000  (%s), summarised\n' "$code"
if [[ "$code" == 200 ]]; then
    python3 -c "$SUMMARY_PY" <"$TMP/resp"
else
    cat "$TMP/resp"
    printf '\n'
fi
