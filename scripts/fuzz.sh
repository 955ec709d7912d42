#!/usr/bin/env bash
# Hostile bytes, the long run: every property test of the parsers of outside
# input (the `prop` modules beside each parser; `cargo test` runs them with
# 256 cases each) run with CASES cases each, one property at a time, in the
# release profile. Rewrites the "Hostile bytes" section of RELIABILITY.md
# (between its fuzz:begin and fuzz:end markers) with the command, date, cases,
# time, peak resident size and result of each property.
#
# No server is needed: the properties call the parsers directly (the
# Keycloak-token one verifies against a cached key and never reaches
# Keycloak).
#
# Usage: scripts/fuzz.sh [CASES]        (default 1000000 per property)
# Settings (environment):
#   FUZZ_SECONDS=3600    bound on the whole run, shared equally by the
#                        properties; one whose share is spent is stopped and
#                        reported with the cases it ran
#   FUZZ_CHUNK=100000    cases per round (only whole rounds are counted)
#   FUZZ_FILTER=         run only the properties whose name contains this
#   FUZZ_NOTE=           one line added under the table (e.g. the machine)
#   FUZZ_BIN=            the unit-test binary, already built (no build)
#   PROPTEST_RNG_SEED    replay a run (the seed is printed per property)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
CASES=${1:-1000000}
BUDGET=${FUZZ_SECONDS:-3600}
FILTER=${FUZZ_FILTER:-}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

BIN=${FUZZ_BIN:-}
if [ -z "$BIN" ]; then
    echo "building the unit tests (release)..." >&2
    BIN=$(cargo test --release --lib --no-run 2>&1 | tee "$OUT/build.log" |
        sed -n 's/.*Executable unittests src\/lib.rs (\(.*\))/\1/p' | tail -1)
fi
if [ -z "$BIN" ] || [ ! -x "$BIN" ]; then
    cat "$OUT/build.log" >&2
    echo "no test binary" >&2
    exit 1
fi

mapfile -t PROPS < <("$BIN" --list 2>/dev/null | sed -n 's/^\(.*::prop::[a-z0-9_]*\): test$/\1/p' |
    grep -F -- "$FILTER" | sort)
if [ "${#PROPS[@]}" -eq 0 ]; then
    echo "no property matches '$FILTER'" >&2
    exit 1
fi

START=$(date +%s)
DATE=$(date -u +%Y-%m-%dT%H:%MZ)
CHUNK=${FUZZ_CHUNK:-100000}
[ "$CHUNK" -gt "$CASES" ] && CHUNK=$CASES
: >"$OUT/rows"
FAILED=0
SHORT=0
n=${#PROPS[@]}
for prop in "${PROPS[@]}"; do
    # Each property gets an equal share of what is left of the time bound;
    # it runs in rounds of CHUNK cases (each a fresh seed) until CASES are
    # done or its share is spent. Only whole rounds are counted.
    left=$((BUDGET - ($(date +%s) - START)))
    share=$((left / n))
    n=$((n - 1))
    echo "$prop: $CASES cases (at most ${share}s)..." >&2
    t0=$(date +%s.%N)
    until=$(($(date +%s) + share))
    done_cases=0
    peak=0
    result=pass
    while [ "$done_cases" -lt "$CASES" ]; do
        now=$(date +%s)
        if [ "$now" -ge "$until" ]; then
            result="time share spent"
            SHORT=1
            break
        fi
        round=$((CASES - done_cases < CHUNK ? CASES - done_cases : CHUNK))
        set +e
        PROPTEST_CASES=$round timeout --signal=KILL "$((until - now))" \
            /usr/bin/time -f '%M' -o "$OUT/rss" \
            "$BIN" --exact "$prop" --test-threads 1 >"$OUT/log" 2>&1
        rc=$?
        set -e
        rss=$(tail -1 "$OUT/rss" 2>/dev/null | grep -E '^[0-9]+$' || echo 0)
        [ "$rss" -gt "$peak" ] && peak=$rss
        if [ "$rc" -eq 0 ] && grep -q '1 passed' "$OUT/log"; then
            done_cases=$((done_cases + round))
        elif [ "$rc" -eq 137 ]; then
            result="time share spent"
            SHORT=1
            break
        else
            result="**FAILED** (see below)"
            FAILED=1
            {
                echo
                echo "\`$prop\`:"
                echo '```'
                grep -E 'minimal failing input|panicked|Test failed|assert' "$OUT/log" | head -20
                echo '```'
            } >>"$OUT/failures"
            break
        fi
    done
    t1=$(date +%s.%N)
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", b - a }')
    mib=$(awk -v k="$peak" 'BEGIN { printf "%.1f MiB", k / 1024 }')
    printf '| `%s` | %s | %s | %s | %s |\n' "$prop" "$done_cases" "$secs" "$mib" "$result" >>"$OUT/rows"
    echo "  $result: $done_cases cases in ${secs}s" >&2
done
TOTAL=$(($(date +%s) - START))

{
    echo '<!-- fuzz:begin -->'
    echo '## Hostile bytes'
    echo
    echo 'Property tests (proptest) of every parser that reads outside input,'
    echo 'with random bytes and grammar-built input (valid tokens with a segment'
    echo 'changed, paths of `%xx`, `;`, `..` and `//` segments, chunked bodies cut'
    echo 'anywhere). Each property checks: no panic, the stated bound on what'
    echo 'comes out, and the round trip where there is one. `cargo test` runs'
    echo 'them with 256 cases each (`PROPTEST_CASES` changes it); this table is'
    echo 'the long run:'
    echo
    echo '```sh'
    echo "scripts/fuzz.sh $CASES"
    echo '```'
    echo
    echo "Run $DATE, release profile, one property at a time, $CASES cases asked"
    echo "per property (in rounds of $CHUNK, each with a fresh seed), ${TOTAL} s in"
    echo "all (bound: ${BUDGET} s); the cases column counts the whole rounds that"
    echo "passed. Time and peak resident size are each property's own (the test"
    echo "process's)."
    [ -n "${FUZZ_NOTE:-}" ] && { echo; echo "$FUZZ_NOTE"; }
    echo
    echo '| property | cases run | seconds | peak resident | result |'
    echo '|---|---:|---:|---:|---|'
    cat "$OUT/rows"
    [ -f "$OUT/failures" ] && cat "$OUT/failures"
    echo
    cat <<'BOUNDS'
What each parser is held to (besides never panicking):

| parser | bounds and round trips checked |
|---|---|
| path canonicalisation (`src/edge/path.rs`) | canonical path ≤ 3 × input + 1 bytes (raw non-ASCII becomes `%XX`), decoded ≤ path, policy ≤ decoded + 1; visible ASCII, no `//`, no dot segment; idempotent: `canonicalize(path) == canonicalize(canonicalize(path).path)`; the plain-path shortcut agrees with the full path |
| `X-Forwarded-For` (`src/http/client_ip.rs`) | the client is the peer or a listed hop, every nearer hop trusted; no allocation but the hop being parsed; request id ≤ 128 bytes of `[A-Za-z0-9-_.:]`, a sane one kept |
| upstream answers (`src/forward/wire.rs`) | an incomplete head is held up to 64 KiB, then refused; ≤ 128 headers; the same answer whether read whole or in any pieces; no hop-by-hop header passed on; chunked: ≤ 4 KiB held until the body ends, round trip of any body in any pieces, bytes after it left for the next answer |
| legacy tokens (`src/tokens/mod.rs`, `jwe.rs`) | mint → verify round trip (access, refresh, e-mail; the scopes never cross); a token with a segment replaced, dropped, added or changed never verifies to other claims; JWE: decrypt ≤ token length, token ≤ 4/3 × plaintext + 100 bytes; verified tokens kept ≤ 4096 |
| Keycloak tokens (`src/identity/keycloak/jwks.rs`) | the signed token verifies; no mutation of it does, to other claims; unknown `kid`s fetch at most once per 10 s |
| cookies (`src/http/request.rs`, `cookies.rs`, `edge/headers.rs`) | each value ≤ its `Cookie` line; `Set-Cookie` → cookie parser and → browser `Cookie` line round trips; the gateway's cookies never go upstream, other lines grow by at most a space per `;` |
| identity headers (`src/edge/headers.rs`) | encoded value ≤ 3 × value, visible ASCII without `,`, percent-decodes back; a list splits back into its values |
| JSON bodies (`src/http/validate`, `/users` bodies) | ≤ one issue per field; the 422 body ≤ (fields + 1) × (6 × body + 1 KiB); nesting refused past serde_json's 128; what passes holds each field's length, no NUL, a normal e-mail address (≤ 100 characters, idempotent), a normal URL |
| query strings (`src/http/request.rs`, `validate`) | a decoded parameter ≤ the query; form encoding round trips; integers within bounds, words within length and alphabet |
| routes file (`src/routes/mod.rs`) | a written file reads back as its routes (longest prefix first); an accepted prefix is plain and given once; quotas ≥ 1 |
| SMTP replies, recipients (`src/mail.rs`) | parsed by lettre (not written here): a parsed reply has a code in 100..599 and no more lines than sent |
| Keycloak answers (`src/identity/keycloak/client.rs`) | users, sessions, import lines, token claims: decoded or refused; error texts ≤ the answer, an unexpected answer quoted in ≤ 300 characters; roles ≤ those listed, sorted, once |
BOUNDS
    echo '<!-- fuzz:end -->'
} >"$OUT/section"

FILE=$REPO/RELIABILITY.md
[ -f "$FILE" ] || printf '# Reliability\n\nFigures of the commands that prove authgate under hostile input, load and\nfaults; each section is rewritten by the command it names.\n' >"$FILE"
python3 - "$FILE" "$OUT/section" <<'EOF'
import re, sys
path, section = sys.argv[1], open(sys.argv[2]).read().rstrip("\n")
text = open(path).read()
pattern = re.compile(r"<!-- fuzz:begin -->.*?<!-- fuzz:end -->", re.S)
if pattern.search(text):
    text = pattern.sub(lambda _: section, text)
else:
    text = text.rstrip("\n") + "\n\n" + section + "\n"
open(path, "w").write(text)
EOF
echo "RELIABILITY.md: ${#PROPS[@]} properties, ${TOTAL}s" >&2
# 1: a property failed; 2: not every property ran all its cases.
[ "$FAILED" -eq 1 ] && exit 1
[ "$SHORT" -eq 1 ] && exit 2
exit 0
