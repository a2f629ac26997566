#!/usr/bin/env python3
"""Usage: bench/scripts/per_request.py [--bin-dir target/release] [--requests 1000]
                                       [--callgrind | --strace] [--access-log off|json]
What one request costs each sidecar of a pair at one connection, counted rather than timed:
starts a pair through bench/scripts/sidecar_pairs.py (its own control plane and backend), then
sends --requests requests one at a time on one keep-alive connection to sidecar A's outbound
listener and reports, per request and per sidecar, the difference between two readings taken
just before and just after them:
  default      voluntary / involuntary context switches and CPU ticks (/proc/PID/status, stat)
  --callgrind  instructions (both sidecars under `valgrind --tool=callgrind`: counters zeroed,
               then dumped; the dumps are kept for callgrind_annotate)
  --strace     system calls (`strace -c -f -p` attached to each sidecar for the requests)
Everything on 127.0.0.1; every wait bounded; the pair's processes end with the harness."""
import argparse, glob, os, re, signal, socket, subprocess, sys, tempfile, time

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(os.path.dirname(here))
ap = argparse.ArgumentParser()
ap.add_argument('--bin-dir', default=os.path.join(root, 'target', 'release'))
ap.add_argument('--requests', type=int, default=1000)
ap.add_argument('--access-log', default='off', choices=['off', 'json'])
mode = ap.add_mutually_exclusive_group()
mode.add_argument('--callgrind', action='store_true')
mode.add_argument('--strace', action='store_true')
a = ap.parse_args()
if not 1 <= a.requests <= 100000:
    sys.exit('--requests must be between 1 and 100000')
proxy = os.path.abspath(os.path.join(a.bin_dir, 'trustmesh-proxy'))
cp = os.path.abspath(os.path.join(a.bin_dir, 'trustmesh'))
work = tempfile.mkdtemp(prefix='tm-perreq-')
bindir = os.path.abspath(a.bin_dir)
if a.callgrind:
    bindir = work
    with open(os.path.join(work, 'trustmesh-proxy'), 'w') as f:
        f.write(f'#!/bin/sh\nexec valgrind --tool=callgrind --callgrind-out-file={work}/callgrind.%p '
                f'{proxy} "$@"\n')
    os.chmod(os.path.join(work, 'trustmesh-proxy'), 0o755)
log = open(os.path.join(work, 'pairs.txt'), 'w+')
hold = 900
bench = subprocess.Popen([sys.executable, os.path.join(here, 'sidecar_pairs.py'), '--cp-bin', cp,
                          '--pair', f'p:{bindir}:{a.access_log}', '--requests', '100', '--rounds', '1',
                          '--conns', '1', '--idle-wait', '0.5', '--hold', str(hold)],
                         stdout=log, stderr=subprocess.STDOUT)
pids = []
deadline = time.monotonic() + 600
while time.monotonic() < deadline and bench.poll() is None:
    log.seek(0)
    pids = [int(x) for l in log if ' pids a ' in l for x in l.split()[3::2]]
    if len(pids) == 2:
        break
    time.sleep(1)
if len(pids) != 2:
    bench.kill()
    sys.exit(f'the sidecar pair did not come up; see {work}/pairs.txt')
argv = open(f'/proc/{pids[0]}/cmdline', 'rb').read().split(b'\0')
host, port = argv[argv.index(b'--outbound') + 1].decode().rsplit(':', 1)


def reading(pid):
    r = {}
    for l in open(f'/proc/{pid}/status'):
        k, _, v = l.partition(':')
        if k in ('voluntary_ctxt_switches', 'nonvoluntary_ctxt_switches'):
            r[k] = int(v)
    f = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()
    r['utime'], r['stime'] = int(f[11]), int(f[12])
    return r


def requests(n):
    s = socket.create_connection((host, int(port)), 10)
    req = b'GET /x HTTP/1.1\r\nHost: bench-server-0.bench\r\n\r\n'
    buf = b''
    for _ in range(n):
        s.sendall(req)
        while True:
            head, sep, rest = buf.partition(b'\r\n\r\n')
            if sep:
                m = re.search(rb'(?i)content-length:\s*(\d+)', head)
                need = int(m.group(1)) if m else 0
                if len(rest) >= need:
                    assert head.startswith(b'HTTP/1.1 200'), head
                    buf = rest[need:]
                    break
            chunk = s.recv(65536)
            if not chunk:
                sys.exit('the sidecar closed the connection')
            buf += chunk
    s.close()


try:
    requests(50)  # warm: the pooled connection between the sidecars is made
    if a.callgrind:
        for pid in pids:
            subprocess.run(['callgrind_control', '-z', str(pid)], stdout=subprocess.DEVNULL, check=True)
    tracers = []
    if a.strace:
        for pid in pids:
            out = os.path.join(work, f'strace.{pid}')
            tracers.append((pid, out, subprocess.Popen(['strace', '-c', '-f', '-o', out, '-p', str(pid)],
                                                       stderr=subprocess.DEVNULL)))
        time.sleep(1)
    before = {pid: reading(pid) for pid in pids}
    requests(a.requests)
    after = {pid: reading(pid) for pid in pids}
    for pid, out, t in tracers:
        t.send_signal(signal.SIGINT)
        t.wait(timeout=30)
    n = a.requests
    tick = os.sysconf('SC_CLK_TCK')
    for side, pid in zip('AB', pids):
        d = {k: after[pid][k] - before[pid][k] for k in before[pid]}
        print(f"{side} pid {pid}: voluntary {d['voluntary_ctxt_switches'] / n:.2f}, "
              f"involuntary {d['nonvoluntary_ctxt_switches'] / n:.2f} switches/req; "
              f"user {d['utime'] * 1e6 / tick / n:.1f} us, sys {d['stime'] * 1e6 / tick / n:.1f} us per req")
    if a.callgrind:
        total = 0
        for side, pid in zip('AB', pids):
            subprocess.run(['callgrind_control', '-d', str(pid)], stdout=subprocess.DEVNULL, check=True)
        time.sleep(2)
        for side, pid in zip('AB', pids):
            dumps = sorted(glob.glob(f'{work}/callgrind.{pid}.*'))
            ir = 0
            for l in open(dumps[-1]):
                if l.startswith('summary:') or l.startswith('totals:'):
                    ir = int(l.split()[1])
            total += ir
            print(f'{side}: {ir / n:.0f} instructions per request ({dumps[-1]})')
        print(f'A+B: {total / n:.0f} instructions per request')
    for pid, out, _ in tracers:
        print(f'--- strace -c of pid {pid} ({n} requests)')
        print(open(out).read())
finally:
    bench.send_signal(signal.SIGINT)  # its own clean-up ends the control plane and sidecars
    try:
        bench.wait(timeout=20)
    except subprocess.TimeoutExpired:
        bench.kill()
        bench.wait()
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    print('work dir', work)
