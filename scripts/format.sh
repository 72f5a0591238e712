#!/usr/bin/env bash
# The tree's formatting (docs/DEVELOPMENT.md, "Formatting"):
#   scripts/format.sh format   rewrite every C file with clang-format (.clang-format)
#                              and every Swift file with swift format (.swift-format)
#   scripts/format.sh lint     change nothing; fail naming each file that is not formatted
# CLANG_FORMAT and SWIFT name the tools (clang-format, swift by default).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}
CLANG_FORMAT=${CLANG_FORMAT:-clang-format}
SWIFT=${SWIFT:-swift}

# The C core (Sources/CProcord/include is a link to include/: find does not
# follow it), the public headers, the C tests, fuzz harnesses, bench, examples.
mapfile -t c_files < <(find Sources/CProcord include Tests/c Tests/fuzz Sources/CProcordBench Examples/c \
  -name '*.[ch]' | LC_ALL=C sort)
# Every Swift file but those of build directories (Tests/OutsidePackage builds in place).
mapfile -t swift_files < <({ echo Package.swift; find Sources Tests Examples -name '*.swift' -not -path '*/.build/*'; } |
  LC_ALL=C sort)

case $mode in
format)
  "$CLANG_FORMAT" -i "${c_files[@]}"
  "$SWIFT" format --configuration .swift-format --in-place --parallel "${swift_files[@]}"
  ;;
lint)
  status=0
  # One line per file (clang-format's own report shows every place, often many).
  if ! report=$("$CLANG_FORMAT" --dry-run "${c_files[@]}" 2>&1); then
    echo "$report" | head -20
    echo "$CLANG_FORMAT failed (if it is missing: make lint-deps installs Debian's clang-format)"
    exit 2
  fi
  unformatted=$(echo "$report" |
    awk -F: '/Wclang-format-violations/ { n[$1]++ } END { for (f in n) print f ": " n[f] " places not as clang-format writes them" }' |
    LC_ALL=C sort)
  if [ -n "$unformatted" ]; then
    status=1
    echo "$unformatted"
    echo "(to see how: $CLANG_FORMAT --dry-run FILE; to fix: make format)"
    version=$("$CLANG_FORMAT" --version | sed -n 's/.*version \([0-9]*\).*/\1/p')
    [ "$version" = 14 ] || echo "(this is clang-format $version; .clang-format is checked with Debian's clang-format 14, which may format differently)"
  fi
  # swift format names the file, line and rule of each finding.
  if ! "$SWIFT" format lint --configuration .swift-format --strict --parallel "${swift_files[@]}"; then
    status=1
    echo "(Swift files above: make format fixes all but the naming rules)"
  fi
  [ $status = 0 ] && echo "C and Swift files formatted as .clang-format and .swift-format say"
  exit $status
  ;;
*)
  echo "usage: $0 format|lint" >&2
  exit 2
  ;;
esac
