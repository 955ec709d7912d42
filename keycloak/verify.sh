#!/usr/bin/env bash
# Smoke test of the authgate realm against a RUNNING Keycloak (keycloak/start.sh).
# Checks, with curl + jq, the facts the gateway relies on (see keycloak/README.md)
# and prints Keycloak's exact answers. Exits non-zero on the first surprise.
# Creates users with a random suffix, so it can run repeatedly on one instance.
#
# Usage: keycloak/verify.sh [BASE_URL]     (default http://127.0.0.1:${KEYCLOAK_PORT:-8080})
#        VERIFY_BENCH=0 skips the latency measurements.
set -euo pipefail

KC="${1:-http://127.0.0.1:${KEYCLOAK_PORT:-8080}}"
R="$KC/realms/authgate/protocol/openid-connect"
A="$KC/admin/realms/authgate"
CID=authgate
CSECRET=authgate-dev-secret # DEV ONLY
SFX="$(date +%s%N | tail -c 7)"
FAILS=0

for t in curl jq python3; do command -v "$t" >/dev/null || { echo "need $t" >&2; exit 2; }; done

say() { printf '\n== %s\n' "$*"; }
ok() { printf '   ok: %s\n' "$*"; }
bad() { printf '   FAIL: %s\n' "$*"; FAILS=$((FAILS + 1)); }
# expect LABEL ACTUAL EXPECTED
expect() { if [[ "$2" == "$3" ]]; then ok "$1 = $2"; else bad "$1: got [$2], want [$3]"; fi; }

# req METHOD URL [curl args...] -> sets STATUS and BODY
req() {
  local m=$1 u=$2 out
  shift 2
  out="$(curl -sS -X "$m" -w $'\n%{http_code}' "$u" "$@")"
  STATUS="${out##*$'\n'}"
  BODY="${out%$'\n'*}"
}
token() { req POST "$R/token" -d client_id=$CID -d client_secret=$CSECRET "$@"; }
password_grant() { token -d grant_type=password -d "username=$1" --data-urlencode "password=$2" -d scope=openid; }
admin() { local m=$1 p=$2; shift 2; req "$m" "$A$p" -H "Authorization: Bearer $SA" "$@"; }
admin_json() { local m=$1 p=$2 d=$3; admin "$m" "$p" -H 'Content-Type: application/json' -d "$d"; }
claims() { python3 -c 'import sys,base64,json
s=sys.argv[1].split(".")[1]; print(json.dumps(json.loads(base64.urlsafe_b64decode(s+"="*(-len(s)%4)))))' "$1"; }
user_id() { admin GET "/users?username=$1&exact=true"; jq -r '.[0].id' <<<"$BODY"; }
short() { sed -E 's/"(access_token|refresh_token|id_token)":"[^"]*"/"\1":"…"/g' <<<"$1"; }

# passlib "$pbkdf2-sha256$rounds$salt$checksum" -> Keycloak credential representation
passlib_credential() {
  python3 - "$1" <<'EOF'
import base64, json, sys
_, alg, rounds, salt, chk = sys.argv[1].split("$")
assert alg == "pbkdf2-sha256"
ab64 = lambda s: base64.b64decode(s.replace(".", "+") + "=" * (-len(s) % 4))
print(json.dumps({
    "type": "password",
    "credentialData": json.dumps({"hashIterations": int(rounds), "algorithm": "pbkdf2-sha256"}),
    "secretData": json.dumps({"value": base64.b64encode(ab64(chk)).decode(),
                              "salt": base64.b64encode(ab64(salt)).decode()}),
}))
EOF
}

# ------------------------------------------------------------------ a) service account, create user
say "a) client-credentials token for the service account"
token -d grant_type=client_credentials
expect "status" "$STATUS" 200
SA="$(jq -r .access_token <<<"$BODY")"
echo "   realm-management roles: $(claims "$SA" | jq -c '.resource_access["realm-management"].roles')"

U1="ada$SFX"
say "a) create $U1 (legacy_id 123, emailVerified false, password)"
admin_json POST /users "$(jq -n --arg u "$U1" '{username:$u, email:($u+"@Example.com"), enabled:true, emailVerified:false,
  attributes:{legacy_id:["123"]}, credentials:[{type:"password", value:"s3cret-pass", temporary:false}]}')"
expect "create status" "$STATUS" 201
ID1="$(user_id "$U1")"
admin GET "/users/$ID1"
echo "   read back: $(jq -c '{username,email,emailVerified,attributes,requiredActions}' <<<"$BODY")"
expect "legacy_id" "$(jq -c .attributes.legacy_id <<<"$BODY")" '["123"]'
expect "email lower-cased" "$(jq -r .email <<<"$BODY")" "${U1}@example.com"

# ------------------------------------------------------------------ b) unverified, then verified
say "b) password grant of the unverified user"
password_grant "$U1" s3cret-pass
echo "   HTTP $STATUS $BODY"
expect "status" "$STATUS" 400
expect "body" "$BODY" '{"error":"invalid_grant","error_description":"Account is not fully set up"}'
admin GET "/users/$ID1"
expect "requiredActions after that attempt" "$(jq -c .requiredActions <<<"$BODY")" '["VERIFY_EMAIL"]'

say "b) emailVerified=true ALONE does not clear the VERIFY_EMAIL required action"
admin_json PUT "/users/$ID1" '{"emailVerified":true}'
expect "PUT status" "$STATUS" 204
password_grant "$U1" s3cret-pass
echo "   HTTP $STATUS $BODY"
expect "still refused" "$STATUS" 400

say "b) emailVerified=true plus requiredActions without VERIFY_EMAIL"
admin GET "/users/$ID1"
ra="$(jq -c '[.requiredActions[] | select(. != "VERIFY_EMAIL")]' <<<"$BODY")"
admin_json PUT "/users/$ID1" "{\"emailVerified\":true,\"requiredActions\":$ra}"
expect "PUT status" "$STATUS" 204
password_grant "$U1" s3cret-pass
expect "status" "$STATUS" 200
echo "   body: $(short "$BODY")"
AT="$(jq -r .access_token <<<"$BODY")"
ac="$(claims "$AT")"
idc="$(claims "$(jq -r .id_token <<<"$BODY")")"
echo "   access token claims: $ac"
expect "access user_id (JSON number)" "$(jq -c '[.user_id, (.user_id|type)]' <<<"$ac")" '[123,"number"]'
expect "id token user_id" "$(jq -c .user_id <<<"$idc")" 123
expect "sid present" "$(jq -r 'has("sid")' <<<"$ac")" true
expect "email" "$(jq -r .email <<<"$ac")" "${U1}@example.com"
expect "realm role user" "$(jq -r '.realm_access.roles | index("user") != null' <<<"$ac")" true

# ------------------------------------------------------------------ c) passlib hashes
# shellcheck disable=SC2016 # literal passlib hashes
for pair in \
  'correct horse battery staple|$pbkdf2-sha256$29000$OWUyNWEyNTg4ZmNlZTdkMjFlYTE1ZmIxYTYzZDUxMzU$DU9PeUO1hzoh0mj4UhuANqU1DMBjIqApaw88WnW1nBI' \
  'random-salt-example|$pbkdf2-sha256$1000$l1JKqdW6t9aas7a2VkrJ2Q$jCXOqvZuAjWEpIqNffCS4jV2VKZ4oaMfrRxcJZyk1EU'; do
  pw="${pair%%|*}"
  hash="${pair#*|}"
  u="pl${SFX}x${#pw}"
  cred="$(passlib_credential "$hash")"
  say "c) import passlib hash for $u ($(cut -d'$' -f3 <<<"$hash") rounds)"
  echo "   credential: $cred"
  admin_json POST /users "$(jq -n --arg u "$u" --argjson c "$cred" '{username:$u, email:($u+"@example.com"), enabled:true, emailVerified:true, credentials:[$c]}')"
  expect "create status" "$STATUS" 201
  id="$(user_id "$u")"
  admin GET "/users/$id/credentials"
  echo "   stored before login: $(jq -r '.[0].credentialData' <<<"$BODY")"
  password_grant "$u" "$pw"
  expect "password grant" "$STATUS" 200
  admin GET "/users/$id/credentials"
  echo "   stored after login:  $(jq -r '.[0].credentialData' <<<"$BODY")"
done

# ------------------------------------------------------------------ d) failures
U2="bob$SFX"
admin_json POST /users "$(jq -n --arg u "$U2" '{username:$u, email:($u+"@example.com"), enabled:true, emailVerified:true,
  credentials:[{type:"password", value:"bob-password", temporary:false}]}')"
ID2="$(user_id "$U2")"
say "d) wrong password"
password_grant "$U2" wrong-password
echo "   HTTP $STATUS $BODY"
expect "body" "$STATUS $BODY" '400 {"error":"invalid_grant","error_description":"Invalid user credentials"}'
sleep 1.2 # keep clear of the 1 s quick-login check
say "d) unknown user"
password_grant "nobody$SFX" whatever-pass
echo "   HTTP $STATUS $BODY"
expect "body" "$STATUS $BODY" '400 {"error":"invalid_grant","error_description":"Invalid user credentials"}'
say "d) disabled user, right password"
admin_json PUT "/users/$ID2" '{"enabled":false}'
password_grant "$U2" bob-password
echo "   HTTP $STATUS $BODY"
expect "body" "$STATUS $BODY" '400 {"error":"invalid_grant","error_description":"Account disabled"}'
admin_json PUT "/users/$ID2" '{"enabled":true}'

say "d) brute force: 10 quick failures, then the right password"
for i in $(seq 1 10); do password_grant "$U2" "wrong-$i"; done
echo "   10th failure: HTTP $STATUS $BODY"
password_grant "$U2" bob-password
echo "   right password while locked: HTTP $STATUS $BODY"
expect "locked answer" "$STATUS $BODY" '400 {"error":"invalid_grant","error_description":"Invalid user credentials"}'
admin GET "/attack-detection/brute-force/users/$ID2"
echo "   attack-detection: $BODY"
expect "disabled (temporarily locked)" "$(jq -r .disabled <<<"$BODY")" true
admin DELETE "/attack-detection/brute-force/users/$ID2"
expect "unlock status" "$STATUS" 204
password_grant "$U2" bob-password
expect "login after unlock" "$STATUS" 200

# ------------------------------------------------------------------ e) sessions
say "e) refresh token reuse (no rotation), then admin session delete"
RT="$(jq -r .refresh_token <<<"$BODY")"
SID="$(jq -r .session_state <<<"$BODY")"
token -d grant_type=refresh_token -d refresh_token="$RT"
expect "refresh #1" "$STATUS" 200
token -d grant_type=refresh_token -d refresh_token="$RT"
expect "refresh #2 with the same token" "$STATUS" 200
admin DELETE "/sessions/$SID"
expect "DELETE /sessions/{id}" "$STATUS" 204
token -d grant_type=refresh_token -d refresh_token="$RT"
echo "   HTTP $STATUS $BODY"
expect "refresh after session delete" "$STATUS $BODY" '400 {"error":"invalid_grant","error_description":"Session not active"}'

say "e) POST /users/{id}/logout"
password_grant "$U2" bob-password
RT="$(jq -r .refresh_token <<<"$BODY")"
admin POST "/users/$ID2/logout"
expect "logout status" "$STATUS" 204
token -d grant_type=refresh_token -d refresh_token="$RT"
echo "   HTTP $STATUS $BODY"
expect "refresh after user logout" "$STATUS $BODY" '400 {"error":"invalid_grant","error_description":"Session not active"}'

say "e) end-session endpoint with client credentials + refresh_token"
password_grant "$U2" bob-password
RT="$(jq -r .refresh_token <<<"$BODY")"
req POST "$R/logout" -d client_id=$CID -d client_secret=$CSECRET -d refresh_token="$RT"
echo "   HTTP $STATUS [$BODY]"
expect "logout status" "$STATUS" 204
token -d grant_type=refresh_token -d refresh_token="$RT"
expect "refresh after logout" "$STATUS $BODY" '400 {"error":"invalid_grant","error_description":"Session not active"}'

say "e) refresh after the user was disabled"
password_grant "$U2" bob-password
RT="$(jq -r .refresh_token <<<"$BODY")"
admin_json PUT "/users/$ID2" '{"enabled":false}'
token -d grant_type=refresh_token -d refresh_token="$RT"
echo "   HTTP $STATUS $BODY"
expect "refresh of disabled user" "$STATUS $BODY" '400 {"error":"invalid_grant","error_description":"User disabled"}'
say "e) refresh with garbage"
token -d grant_type=refresh_token -d refresh_token=not.a.token
echo "   HTTP $STATUS $BODY"
expect "garbage" "$STATUS $BODY" '400 {"error":"invalid_grant","error_description":"Invalid refresh token"}'

# ------------------------------------------------------------------ f) latencies
if [[ "${VERIFY_BENCH:-1}" != 0 ]]; then
  say "f) latency (sequential, 20 each; median / p90 in ms)"
  stats() { sort -n | awk '{a[NR]=$1} END {printf "median %.0f ms, p90 %.0f ms, n=%d\n", a[int((NR+1)/2)], a[int(NR*0.9)], NR}'; }
  for i in $(seq 1 20); do
    curl -s -o /dev/null -w '%{time_total}\n' -X POST "$R/token" -d client_id=$CID -d client_secret=$CSECRET \
      -d grant_type=password -d "username=$U1" -d password=s3cret-pass
  done | awk '{print $1*1000}' | { printf '   password grant (argon2 hash): '; stats; }
  for i in $(seq 1 20); do
    curl -s -o /dev/null -w '%{time_total}\n' -X POST "$A/users" -H "Authorization: Bearer $SA" \
      -H 'Content-Type: application/json' -d "{\"username\":\"bench$SFX$i\",\"email\":\"bench$SFX$i@example.com\",\"enabled\":true,\"emailVerified\":true,\"attributes\":{\"legacy_id\":[\"$((1000 + i))\"]},\"credentials\":[{\"type\":\"password\",\"value\":\"bench-password\",\"temporary\":false}]}"
  done | awk '{print $1*1000}' | { printf '   admin create user (with password): '; stats; }
  for i in $(seq 1 20); do
    curl -s -o /dev/null -w '%{time_total}\n' "$A/users?username=$U1&exact=true" -H "Authorization: Bearer $SA"
  done | awk '{print $1*1000}' | { printf '   admin GET user by username: '; stats; }
fi

echo
if ((FAILS > 0)); then
  echo "verify: $FAILS check(s) FAILED"
  exit 1
fi
echo "verify: all checks passed"
