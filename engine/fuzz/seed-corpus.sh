#!/bin/sh
# Fills corpus/load (gitignored) with the committed seeds and every YAML file of the
# repository's playbooks, policies and test fixtures. Safe to run again: files are named by
# content hash, so nothing is duplicated.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
corpus="$here/corpus/load"
mkdir -p "$corpus"
find "$here/seeds" "$root/playbooks" "$root/policies" "$root/tests/fixtures" \
    -type f \( -name '*.yaml' -o -name '*.yml' \) 2>/dev/null |
while read -r file; do
    sum=$(sha1sum "$file" | cut -d' ' -f1)
    cp "$file" "$corpus/$sum"
done
echo "$(ls "$corpus" | wc -l) file(s) in $corpus"
