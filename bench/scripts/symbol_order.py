#!/usr/bin/env python3
"""Usage: bench/scripts/symbol_order.py [--bin-dir target/release] [--out proxy/symbol-order.txt]
Regenerates the sidecar's symbol ordering file (proxy/build.rs links the release binary with
it): runs a sidecar pair per access-log mode (off, json) through bench/scripts/sidecar_pairs.py
with every sidecar under `valgrind --tool=callgrind`, sends it requests, reads the admin
endpoints a scraper reads (/live, /ready, /metrics, /config), dumps the profiles and writes the
functions that ran, those the binary defines, in the order callgrind first saw them.
Re-run it after a change of dependencies or of the request path, with a release build of that
change (a stale file only costs memory: missing symbols are skipped). Everything on 127.0.0.1;
every wait bounded; the pair's processes end with the harness."""
import argparse, glob, os, re, subprocess, sys, tempfile, time, urllib.request

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(os.path.dirname(here))
ap = argparse.ArgumentParser()
ap.add_argument('--bin-dir', default=os.path.join(root, 'target', 'release'))
ap.add_argument('--out', default=os.path.join(root, 'proxy', 'symbol-order.txt'))
ap.add_argument('--requests', type=int, default=300)
a = ap.parse_args()
proxy = os.path.abspath(os.path.join(a.bin_dir, 'trustmesh-proxy'))
cp = os.path.abspath(os.path.join(a.bin_dir, 'trustmesh'))
for b in (proxy, cp):
    if not os.access(b, os.X_OK):
        sys.exit(f'{b} is missing: cargo build --release -p trustmesh-control-plane -p trustmesh-proxy')
work = tempfile.mkdtemp(prefix='tm-symorder-')
wrapper = os.path.join(work, 'trustmesh-proxy')
with open(wrapper, 'w') as f:
    f.write(f'#!/bin/sh\nexec valgrind --tool=callgrind --demangle=no '
            f'--callgrind-out-file={work}/callgrind.%p {proxy} "$@"\n')
os.chmod(wrapper, 0o755)
log = open(os.path.join(work, 'pairs.txt'), 'w+')
hold = 60
bench = subprocess.Popen([sys.executable, os.path.join(here, 'sidecar_pairs.py'), '--cp-bin', cp,
                          '--pair', f'off:{work}:off', '--pair', f'json:{work}:json',
                          '--requests', str(a.requests), '--rounds', '1', '--conns', '4',
                          '--hold', str(hold)], stdout=log, stderr=subprocess.STDOUT)
pids = []
deadline = time.monotonic() + 600
while time.monotonic() < deadline and bench.poll() is None:
    log.seek(0)
    pids = [int(x) for l in log if ' pids a ' in l for x in l.split()[3::2]]
    if len(pids) == 4:
        break
    time.sleep(2)
if len(pids) != 4:
    bench.kill()
    sys.exit(f'the sidecar pairs did not come up; see {work}/pairs.txt')
for pid in pids:
    argv = open(f'/proc/{pid}/cmdline', 'rb').read().split(b'\0')
    admin = argv[argv.index(b'--admin') + 1].decode()
    for path in ['/live', '/ready', '/metrics', '/config']:
        try:
            urllib.request.urlopen(f'http://{admin}{path}', timeout=10).read()
        except OSError as e:
            print(f'{admin}{path}: {e}', file=sys.stderr)
for pid in pids:
    subprocess.run(['callgrind_control', '-d', str(pid)], stdout=subprocess.DEVNULL, check=True)
time.sleep(3)
bench.wait(timeout=hold + 60)

defined = set()
nm = subprocess.run(['nm', '--defined-only', proxy], capture_output=True, text=True, check=True)
for l in nm.stdout.splitlines():
    p = l.split()
    if len(p) == 3 and p[1] in 'tTwW':
        defined.add(p[2])
ran = {}
for path in sorted(glob.glob(os.path.join(work, 'callgrind.*.*'))):
    names = {}
    for l in open(path, errors='replace'):
        m = re.match(r'^c?fn=\((\d+)\)(?: (.*))?$', l.rstrip('\n'))
        if m:
            i, name = m.groups()
            if name is not None:
                names[i] = name
            if names.get(i) in defined:
                ran.setdefault(names[i], None)
if len(ran) < 500:
    sys.exit(f'only {len(ran)} functions seen; see {work}')
with open(a.out, 'w') as f:
    f.write('\n'.join(ran) + '\n')
print(f'{len(ran)} functions -> {a.out} (profiles in {work})')
