#!/usr/bin/env bash
# Runs every fuzz target in the module for a set time, one after another.
# Not part of CI: run it by hand (as root, like the tests) when there is time.
#
#   scripts/fuzz-all.sh                  every target, 30 s each
#   FUZZTIME=5m scripts/fuzz-all.sh      longer
#   scripts/fuzz-all.sh ./ipvsadm ./gso  only these packages
#
# Environment: FUZZTIME (go test -fuzztime, default 30s), FUZZMINIMIZETIME
# (default 5s), FUZZLOGS (where each target's output goes, default a new
# directory under /tmp).
#
# A target that finds a failure has it minimised and written by go test to
# <package>/testdata/fuzz/<Target>/<hash>; from then on a plain `go test`
# runs that input as a regression test, so commit the file together with
# the fix. The summary names each such file. The exit code is 1 when a
# target found a failure (or did not build or run), 0 otherwise.
set -uo pipefail

FUZZTIME=${FUZZTIME:-30s}
FUZZMINIMIZETIME=${FUZZMINIMIZETIME:-5s}
cd "$(dirname "$0")/.."
FUZZLOGS=${FUZZLOGS:-$(mktemp -d /tmp/fuzz-all.XXXXXX)}
mkdir -p "$FUZZLOGS"

pkgs=("$@")
if [ ${#pkgs[@]} -eq 0 ]; then
	pkgs=(./...)
fi

# Only packages with a fuzz function in a test file are asked: `go test
# -list` runs each test binary, and some run a TestMain that builds the
# director first.
mapfile -t dirs < <(go list -f '{{.Dir}}' "${pkgs[@]}" 2>/dev/null |
	while read -r d; do
		if grep -qs '^func Fuzz' "$d"/*_test.go; then echo "$d"; fi
	done)
if [ ${#dirs[@]} -eq 0 ]; then
	echo "fuzz-all: no fuzz targets in ${pkgs[*]}" >&2
	exit 1
fi

# go test -list prints a package's matching names, then "ok  <package>".
targets=()
if ! listing=$(go test -list '^Fuzz' "${dirs[@]}" 2>&1); then
	echo "$listing" >&2
	echo "fuzz-all: go test -list failed" >&2
	exit 1
fi
names=()
while IFS= read -r line; do
	case "$line" in
	Fuzz*) names+=("$line") ;;
	ok*)
		pkg=$(awk '{print $2}' <<<"$line")
		for n in "${names[@]}"; do targets+=("$pkg $n"); done
		names=()
		;;
	esac
done <<<"$listing"

echo "fuzz-all: ${#targets[@]} targets, $FUZZTIME each, logs in $FUZZLOGS"
start=$SECONDS
failed=0
summary=()
for t in "${targets[@]}"; do
	read -r pkg name <<<"$t"
	log="$FUZZLOGS/${pkg//\//_}.$name.log"
	t0=$SECONDS
	printf '%-28s %-22s ' "$pkg" "$name"
	go test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" \
		-fuzzminimizetime "$FUZZMINIMIZETIME" "$pkg" >"$log" 2>&1
	rc=$?
	secs=$((SECONDS - t0))
	execs=$(grep -o 'execs: [0-9]*' "$log" | tail -1 | awk '{print $2}')
	crasher=$(sed -n 's/.*Failing input written to \(testdata\/fuzz\/[^ ]*\).*/\1/p' "$log" | tail -1)
	if [ $rc -eq 0 ]; then
		status=ok
	elif [ -n "$crasher" ]; then
		status="FAIL: $(go list -f '{{.Dir}}' "$pkg" | sed "s|^$PWD/||")/$crasher"
		failed=1
	else
		status="ERROR (rc=$rc), see $log"
		failed=1
	fi
	printf '%4ss %12s execs  %s\n' "$secs" "${execs:-?}" "$status"
	summary+=("$(printf '%-28s %-22s %s' "$pkg" "$name" "$status")")
	if [ $rc -ne 0 ]; then
		# the failure itself: go test's lines up to the input file
		grep -v '^fuzz: elapsed' "$log" | head -40 | sed 's/^/    /'
	fi
done

echo
echo "fuzz-all: ${#targets[@]} targets in $((SECONDS - start))s"
n=0
for s in "${summary[@]}"; do
	case "$s" in *ok) ;; *) echo "  $s"; n=$((n + 1)) ;; esac
done
if [ $failed -ne 0 ]; then
	echo "fuzz-all: $n target(s) failed; inputs under testdata/fuzz/ are now regression tests"
	exit 1
fi
echo "fuzz-all: no failures"
