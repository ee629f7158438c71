#!/usr/bin/env bash
# Create the example topics and subscriptions of the README walkthrough in a running Pub/Sub
# emulator (localstack/pubsub-start.sh), project veltrix-local, through its REST API:
#   topic veltrix-orders       sub veltrix-orders-sub      (ack deadline 30 s, retry 1 s..60 s,
#                                                           dead letters to veltrix-orders-dlq
#                                                           after 10 delivery attempts)
#   topic veltrix-orders-dlq   sub veltrix-orders-dlq-sub  (keeps the dead letters: a topic
#                                                           without a subscription drops them)
#   topic veltrix-forwarded    sub veltrix-forwarded-sub
# Idempotent: an existing topic or subscription (409) is fine; an existing subscription gets its
# settings patched back to the ones above. Prints the full names.
#
# Note: the emulator stalls consumption on a subscription name that was deleted and created
# again in the same emulator run. These fixed names are for the walkthrough; tests should use
# unique names per run.
set -euo pipefail

PORT="${PUBSUB_PORT:-8085}"
PROJECT="${PUBSUB_PROJECT:-veltrix-local}"
BASE="http://127.0.0.1:$PORT/v1/projects/$PROJECT"

log() { printf 'pubsub: %s\n' "$*"; }
die() { printf 'pubsub: error: %s\n' "$*" >&2; exit 1; }

# call METHOD PATH [JSON]: prints the HTTP code; the body goes to $BODY.
BODY="$(mktemp)"
trap 'rm -f "$BODY"' EXIT
call() {
  local args=(-sS --max-time 10 -o "$BODY" -w '%{http_code}' -X "$1" "$BASE/$2")
  [[ $# -ge 3 ]] && args+=(-H 'Content-Type: application/json' --data "$3")
  # curl prints 000 itself when nothing answers
  curl "${args[@]}" 2>/dev/null || true
}

code="$(call GET topics)"
[[ "$code" == 200 ]] || die "nothing answers at http://127.0.0.1:$PORT (HTTP $code); run localstack/pubsub-start.sh first"

topic() {
  local code
  code="$(call PUT "topics/$1")"
  case "$code" in
    200) log "created topic projects/$PROJECT/topics/$1" ;;
    409) log "topic projects/$PROJECT/topics/$1 exists" ;;
    *) die "creating topic $1: HTTP $code: $(cat "$BODY")" ;;
  esac
}

# subscription NAME TOPIC [SETTINGS-JSON (object members without braces) UPDATE-MASK]
subscription() {
  local name="$1" topic="projects/$PROJECT/topics/$2" settings="${3:-}" mask="${4:-}" code
  code="$(call PUT "subscriptions/$name" "{\"topic\":\"$topic\"${settings:+,$settings}}")"
  case "$code" in
    200) log "created subscription projects/$PROJECT/subscriptions/$name -> $topic" ;;
    409)
      # Exists: it must be on the same topic (a subscription cannot move), and its settings are
      # patched back to ours so a re-run always leaves the same configuration.
      code="$(call GET "subscriptions/$name")"
      [[ "$code" == 200 ]] || die "reading subscription $name: HTTP $code: $(cat "$BODY")"
      grep -Eq "\"topic\": *\"$topic\"" "$BODY" ||
        die "subscription $name exists on another topic: $(tr -d '\n' <"$BODY")"
      if [[ -n "$settings" ]]; then
        code="$(call PATCH "subscriptions/$name" "{\"subscription\":{$settings},\"updateMask\":\"$mask\"}")"
        [[ "$code" == 200 ]] || die "updating subscription $name ($mask): HTTP $code: $(cat "$BODY")"
        log "subscription projects/$PROJECT/subscriptions/$name exists; settings reapplied ($mask)"
      else
        log "subscription projects/$PROJECT/subscriptions/$name exists"
      fi
      ;;
    *) die "creating subscription $name: HTTP $code: $(cat "$BODY")" ;;
  esac
}

# Dead-letter topic and its subscription first: the policy below names the topic.
topic veltrix-orders-dlq
subscription veltrix-orders-dlq-sub veltrix-orders-dlq
topic veltrix-orders
subscription veltrix-orders-sub veltrix-orders \
  '"ackDeadlineSeconds":30,"retryPolicy":{"minimumBackoff":"1s","maximumBackoff":"60s"},"deadLetterPolicy":{"deadLetterTopic":"projects/'"$PROJECT"'/topics/veltrix-orders-dlq","maxDeliveryAttempts":10}' \
  ackDeadlineSeconds,retryPolicy,deadLetterPolicy
topic veltrix-forwarded
subscription veltrix-forwarded-sub veltrix-forwarded

echo
printf '%-24s %s\n' \
  topic "projects/$PROJECT/topics/veltrix-orders" \
  subscription "projects/$PROJECT/subscriptions/veltrix-orders-sub" \
  topic "projects/$PROJECT/topics/veltrix-orders-dlq" \
  subscription "projects/$PROJECT/subscriptions/veltrix-orders-dlq-sub" \
  topic "projects/$PROJECT/topics/veltrix-forwarded" \
  subscription "projects/$PROJECT/subscriptions/veltrix-forwarded-sub"
