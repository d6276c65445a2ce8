#!/usr/bin/env bash
# Gather the HAPI FHIR 8.8.1 validator and the FHIR R4 core definitions from
# Maven Central (pom.xml), and compile the suite's driver S117Validate.java
# against them, into $S117_FHIR_VALIDATOR_HOME or <repo>/var/fhir-validator
# (git-ignored): libs/ (jars) and classes/. Runs offline afterwards.
# Idempotent: does nothing when the folder already holds this version and the
# driver is unchanged. Prints the folder on stdout (progress goes to stderr).
#
#   scripts/fhir-validator/fetch.sh
#   java -cp "$(scripts/fhir-validator/fetch.sh)/libs/*:$(...)/classes" S117Validate --defs DIR ... FILE...
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
home="${S117_FHIR_VALIDATOR_HOME:-$repo/var/fhir-validator}"
version="$(sed -n 's:.*<hapi.version>\(.*\)</hapi.version>.*:\1:p' "$here/pom.xml")"
src="$here/S117Validate.java"
digest="$(sha256sum "$src" | cut -c1-16)"
stamp="$home/.complete-hapi-$version-$digest"

if [[ -f "$stamp" && -f "$home/libs/hapi-fhir-validation-$version.jar" && -f "$home/classes/S117Validate.class" ]]; then
  echo "$home"
  exit 0
fi

command -v mvn >/dev/null || { echo "fetch.sh: mvn not found (apt-get install maven)" >&2; exit 1; }
command -v javac >/dev/null || { echo "fetch.sh: javac not found (Java 17 JDK: apt-get install openjdk-17-jdk-headless)" >&2; exit 1; }

mkdir -p "$home"
tmp="$(mktemp -d "$home/.tmp.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
if [[ -f "$home/libs/hapi-fhir-validation-$version.jar" && -f "$home/libs/.complete-$version" ]]; then
  cp -a "$home/libs" "$tmp/libs"
else
  echo "fetch.sh: gathering hapi-fhir-validation:$version and the R4 definitions into $home/libs" >&2
  mvn -q -B -U -f "$here/pom.xml" -Dstyle.color=never \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp/libs" >&2
  [[ -f "$tmp/libs/hapi-fhir-validation-$version.jar" ]] || { echo "fetch.sh: hapi-fhir-validation-$version.jar missing after mvn" >&2; exit 1; }
  touch "$tmp/libs/.complete-$version"
fi
echo "fetch.sh: compiling S117Validate.java" >&2
mkdir -p "$tmp/classes"
javac -nowarn -cp "$tmp/libs/*" -d "$tmp/classes" "$src" 2>&1 | grep -v '^Note:' >&2 || true
[[ -f "$tmp/classes/S117Validate.class" ]] || { echo "fetch.sh: S117Validate.java did not compile" >&2; exit 1; }
rm -rf "$home/libs" "$home/classes" "$home"/.complete-hapi-*
mv "$tmp/libs" "$home/libs"
mv "$tmp/classes" "$home/classes"
touch "$stamp"
echo "$home"
