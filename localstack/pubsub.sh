#!/usr/bin/env bash
# Publish to and pull from the Pub/Sub emulator over its REST API, for the README walkthrough
# and for poking at a running worker by hand (no gcloud needed).
#
#   localstack/pubsub.sh publish TOPIC BODY [BODY...]     # one message per BODY
#   localstack/pubsub.sh pull SUBSCRIPTION [MAX]           # prints and acks up to MAX (10)
#
# pull prints one JSON line {"body", "attributes"} per message.
#
# TOPIC and SUBSCRIPTION are short names in project $PUBSUB_PROJECT (veltrix-local) or full
# names (projects/P/topics/T). The emulator address is $PUBSUB_EMULATOR_HOST (127.0.0.1:8085).
set -euo pipefail

HOST="${PUBSUB_EMULATOR_HOST:-127.0.0.1:8085}"
PROJECT="${PUBSUB_PROJECT:-veltrix-local}"

die() { printf 'pubsub: error: %s\n' "$*" >&2; exit 1; }
full() { if [[ "$2" == projects/* ]]; then echo "$2"; else echo "projects/$PROJECT/$1/$2"; fi; }
post() {
  local out code
  out="$(mktemp)"
  code="$(curl -sS --max-time 30 -o "$out" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
    "http://$HOST/v1/$1" --data "$2" 2>/dev/null || true)"
  if [[ "$code" != 200 ]]; then
    die "POST $1: HTTP ${code:-000}: $(cat "$out") (is the emulator running? localstack/pubsub-start.sh)"
  fi
  cat "$out"
  rm -f "$out"
}

[[ $# -ge 2 ]] || die "usage: $0 publish TOPIC BODY... | pull SUBSCRIPTION [MAX]"
case "$1" in
  publish)
    topic="$(full topics "$2")"
    shift 2
    [[ $# -ge 1 ]] || die "nothing to publish"
    messages="$(python3 -c 'import base64, json, sys; print(json.dumps({"messages": [{"data": base64.b64encode(a.encode()).decode()} for a in sys.argv[1:]]}))' "$@")"
    post "$topic:publish" "$messages" >/dev/null
    echo "published $# message(s) to $topic"
    ;;
  pull)
    sub="$(full subscriptions "$2")"
    response="$(post "$sub:pull" "{\"maxMessages\": ${3:-10}, \"returnImmediately\": true}")"
    # Prints one {"body", "attributes"} line per message; the ack request goes to fd 3.
    ack_file="$(mktemp)"
    python3 -c '
import base64, json, sys
received = json.loads(sys.argv[1]).get("receivedMessages", [])
for m in received:
    msg = m["message"]
    body = base64.b64decode(msg.get("data", "")).decode("utf-8", "replace")
    print(json.dumps({"body": body, "attributes": msg.get("attributes", {})}, ensure_ascii=False))
with open(sys.argv[2], "w") as f:
    json.dump({"ackIds": [m["ackId"] for m in received]}, f)
' "$response" "$ack_file"
    ack="$(cat "$ack_file")"
    rm -f "$ack_file"
    if [[ "$ack" != '{"ackIds": []}' ]]; then
      post "$sub:acknowledge" "$ack" >/dev/null
      echo "pulled and acked from $sub" >&2
    else
      echo "nothing waiting on $sub" >&2
    fi
    ;;
  *) die "unknown command $1 (publish | pull)" ;;
esac
