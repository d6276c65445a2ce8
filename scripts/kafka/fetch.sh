#!/usr/bin/env bash
# Gather an Apache Kafka broker (org.apache.kafka:kafka_2.13) and its runtime
# dependencies from Maven Central into one folder of jars:
#   $S117_KAFKA_LIBS, or <repo>/var/kafka/libs (git-ignored).
# Idempotent: does nothing when the folder already holds this version.
# Prints the folder on stdout (progress goes to stderr). -U: a failed download
# is retried now rather than remembered by Maven until its update interval.
#
#   scripts/kafka/fetch.sh            # default version (pom.xml)
#   S117_KAFKA_VERSION=3.9.2 scripts/kafka/fetch.sh
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
libs="${S117_KAFKA_LIBS:-$repo/var/kafka/libs}"
version="${S117_KAFKA_VERSION:-$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/pom.xml")}"
stamp="$libs/.complete-kafka-$version"

if [[ -f "$stamp" && -f "$libs/kafka_2.13-$version.jar" ]]; then
  echo "$libs"
  exit 0
fi

command -v mvn >/dev/null || { echo "fetch.sh: mvn not found (apt-get install maven)" >&2; exit 1; }
command -v java >/dev/null || { echo "fetch.sh: java not found (Java 17: apt-get install openjdk-17-jre-headless)" >&2; exit 1; }

echo "fetch.sh: gathering kafka_2.13:$version and its runtime dependencies into $libs" >&2
# Gather into a sibling temp folder and swap it in, so an interrupted fetch
# never leaves a half-filled folder that looks complete.
parent="$(dirname "$libs")"
mkdir -p "$parent"
tmp="$(mktemp -d "$parent/.libs.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
mvn -q -B -U -f "$here/pom.xml" \
  -Dkafka.version="$version" \
  -Dstyle.color=never \
  dependency:copy-dependencies \
  -DincludeScope=runtime \
  -DoutputDirectory="$tmp" >&2
[[ -f "$tmp/kafka_2.13-$version.jar" ]] || { echo "fetch.sh: kafka_2.13-$version.jar missing after mvn" >&2; exit 1; }
touch "$tmp/.complete-kafka-$version"
rm -rf "$libs"
mv "$tmp" "$libs"
trap - EXIT
echo "$libs"
