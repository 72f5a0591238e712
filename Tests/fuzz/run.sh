#!/bin/sh
# Runs the libFuzzer harnesses built in FUZZ_DIR (make fuzz, make test-fuzz).
#
#   run.sh replay FUZZ_DIR HARNESS...          each corpus of Tests/fuzz/corpus, once
#   run.sh fuzz FUZZ_DIR SECONDS HARNESS...    each harness for SECONDS seconds
#
# Fuzzing works on a copy of the harness's corpus under FUZZ_DIR/corpus, seeded
# from the tree, so that new inputs never land in the tree; a finding is saved
# under FUZZ_DIR/artifacts. The log of each run is FUZZ_DIR/HARNESS.log; this
# prints one line per harness (executions and speed) and, for a finding, the
# end of its log. Every harness runs; the status is 1 if any failed.
set -u

# No input may take this long (the harnesses' own limits are 10 s).
FLAGS="-timeout=30 -print_final_stats=1"

mode=$1
dir=$2
shift 2
seconds=0
if [ "$mode" = fuzz ]; then
  seconds=$1
  shift
fi

stat() { sed -n "s/^stat::$1: *//p" "$2" | tail -n 1; }

failed=0
mkdir -p "$dir/artifacts"
for harness in "$@"; do
  log="$dir/$harness.log"
  if [ "$mode" = replay ]; then
    # -runs=0: runs each input of the corpus, and nothing else (nothing is written).
    "$dir/fuzz_$harness" $FLAGS -runs=0 -artifact_prefix="$dir/artifacts/$harness-" \
      "Tests/fuzz/corpus/$harness" > "$log" 2>&1
  else
    mkdir -p "$dir/corpus/$harness"
    cp Tests/fuzz/corpus/"$harness"/* "$dir/corpus/$harness/"
    "$dir/fuzz_$harness" $FLAGS -max_total_time="$seconds" -artifact_prefix="$dir/artifacts/$harness-" \
      "$dir/corpus/$harness" > "$log" 2>&1
  fi
  status=$?
  if [ "$mode" = replay ]; then
    summary="$(ls "Tests/fuzz/corpus/$harness" | wc -l) inputs replayed"
  else
    summary="$(stat number_of_executed_units "$log") execs, $(stat average_exec_per_sec "$log") exec/s, corpus $(ls "$dir/corpus/$harness" | wc -l)"
  fi
  if [ $status -eq 0 ]; then
    echo "fuzz_$harness: $summary"
  else
    failed=1
    echo "fuzz_$harness: FAILED (status $status), see $log:"
    grep -E 'FUZZ_CHECK|ERROR|SUMMARY|Test unit written|^    #[0-9]' "$log" | head -n 40
  fi
done
exit $failed
