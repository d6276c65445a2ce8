"""WAL frames a commit, by table and index: reads an strace of a hub process's WAL writes
(`strace -f -y -e trace=pwrite64,fdatasync -o TRACE ...`), takes each frame header's page
number, and names its owner from the final database's `dbstat`; the first 5 commits left out.

    KEEP=1 PYTHONPATH=<checkout> strace -f -y -e trace=pwrite64,fdatasync -o /tmp/trace \
        .venv/bin/python bench/dispatch_phases.py <level dir> 16      # prints: kept <dir>
    .venv/bin/python bench/wal_frames.py /tmp/trace <dir>/hub.db
"""
import re, sys, sqlite3, collections, ast
st, db = sys.argv[1], sys.argv[2]
# page number -> object name, from the final database
c = sqlite3.connect(db)
owner = {p: n for n, p in c.execute("select name, pageno from dbstat")}
commits = []; cur = []
for line in open(st):
    if "-wal>" not in line: continue
    if "fdatasync(" in line:
        commits.append(cur); cur = []; continue
    m = re.search(r'pwrite64\(\d+<[^>]*>, "(.*)"(\.\.\.)?, (\d+), (\d+)\) = (\d+)', line)
    if not m: continue
    if int(m.group(3)) == 24:
        raw = ast.literal_eval('b"' + m.group(1) + '"')
        cur.append(int.from_bytes(raw[:4], "big"))
commits = commits[5:]
tot = collections.Counter()
for cm in commits:
    for p in cm: tot[owner.get(p, "?")] += 1
n = len(commits)
print(n, "commits; frames a commit", sum(map(len, commits))/n)
for k, v in tot.most_common(25): print(f"  {v/n:7.1f}  {k}")
