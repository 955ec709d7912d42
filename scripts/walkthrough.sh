#!/usr/bin/env bash
# Walks a running authgate through the whole account journey, reading the
# links out of the real mails:
#   signup → mail → verify → signin → me → refresh → signout → forgot → reset → signin
# Usage: scripts/walkthrough.sh [AUTHGATE_URL] [MAILBOX_URL]
# (defaults: http://127.0.0.1:5000 and maildev's http://127.0.0.1:1080)
set -euo pipefail

BASE=${1:-${AUTHGATE_URL:-http://127.0.0.1:5000}}
MAILBOX=${2:-${MAILBOX_URL:-http://127.0.0.1:1080}}
id=$(date +%s%N | tail -c 9)
EMAIL="walk-$id@example.com"
USERNAME="walk_$id"
PASSWORD="first password $id"
NEW_PASSWORD="second password $id"

step() { printf '\n== %s\n' "$*"; }
fail() { printf 'FAILED: %s\n' "$*" >&2; exit 1; }

# post PATH JSON [BEARER] → prints "STATUS BODY"
call() {
  local method=$1 path=$2 body=${3:-} bearer=${4:-}
  local args=(-s -o /tmp/walk-body.$$ -w '%{http_code}' -X "$method" "$BASE$path")
  [[ -n $body ]] && args+=(-H 'content-type: application/json' -d "$body")
  [[ -n $bearer ]] && args+=(-H "authorization: Bearer $bearer")
  local status
  status=$(curl "${args[@]}")
  printf '%s %s\n' "$status" "$(cat /tmp/walk-body.$$)"
  rm -f /tmp/walk-body.$$
}

expect() { # expect STATUS "$(call ...)"
  local want=$1 got=$2
  [[ ${got%% *} == "$want" ]] || fail "expected $want, got: $got"
  printf '%s\n' "${got#* }"
}

field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

# mail_token SUBJECT NTH → the token of the link in the NTH mail to $EMAIL
mail_token() {
  local subject=$1 nth=$2
  for _ in $(seq 1 100); do
    token=$(curl -s "$MAILBOX/email" | python3 -c '
import html, json, re, sys
from urllib.parse import urlparse, parse_qs
mails = [m for m in json.load(sys.stdin)
         if m.get("subject") == sys.argv[1] and any(t["address"].lower() == sys.argv[2].lower() for t in m["to"])]
if len(mails) >= int(sys.argv[3]):
    link = html.unescape(re.search(r"href=\"([^\"]+)\"", mails[int(sys.argv[3]) - 1]["html"]).group(1))
    print(link, file=sys.stderr)
    print(parse_qs(urlparse(link).query)["token"][0])
' "$subject" "$EMAIL" "$nth") && [[ -n $token ]] && { echo "$token"; return; }
    sleep 0.1
  done
  fail "no mail '$subject' #$nth to $EMAIL"
}

step "signup $EMAIL"
expect 200 "$(call POST /users/signup "{\"email\":\"$EMAIL\",\"username\":\"$USERNAME\",\"password\":\"$PASSWORD\"}")" >/dev/null

step "verification mail"
verify_token=$(mail_token "Verify Your Email Address" 1)

step "verify-email"
expect 200 "$(call POST /users/verify-email "{\"token\":\"$verify_token\"}")" >/dev/null

step "signin"
body=$(expect 200 "$(call POST /users/signin "{\"username\":\"$USERNAME\",\"password\":\"$PASSWORD\"}")")
access=$(field "$body" access_token)
refresh=$(field "$body" refresh_token)

step "me"
expect 200 "$(call GET /users/me/ '' "$access")"

step "refresh-token"
body=$(expect 200 "$(call POST /users/refresh-token "{\"refresh_token\":\"$refresh\"}")")
refreshed=$(field "$body" access_token)
expect 200 "$(call GET /users/me '' "$refreshed")" >/dev/null

step "signout (then the old token is refused)"
expect 200 "$(call POST /users/signout '' "$access")"
expect 403 "$(call GET /users/me '' "$access")"

step "forgot-password"
expect 200 "$(call POST /users/forgot-password "{\"email\":\"$EMAIL\"}")"
reset_token=$(mail_token "Reset Your Password" 1)

step "reset-password"
expect 200 "$(call POST /users/reset-password "{\"token\":\"$reset_token\",\"new_password\":\"$NEW_PASSWORD\"}")"

step "signin with the new password (the old one is refused)"
expect 401 "$(call POST /users/signin "{\"username\":\"$USERNAME\",\"password\":\"$PASSWORD\"}")"
expect 200 "$(call POST /users/signin "{\"username\":\"$EMAIL\",\"password\":\"$NEW_PASSWORD\"}")" >/dev/null

printf '\nwalkthrough passed\n'
