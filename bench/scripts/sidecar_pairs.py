#!/usr/bin/env python3
"""Usage: bench/scripts/sidecar_pairs.py --cp-bin DIR/trustmesh --pair NAME:BINDIR:off|json ...
Sidecar pairs side by side, one control plane, interleaved rounds of closed-loop load.
Each pair: name, bin dir, access-log mode. Reports CPU per request (A+B utime+stime over the
requests of its segments), idle VmRSS/Pss after start-up, peak VmRSS/Pss under load.
Everything on 127.0.0.1; every loop bounded; children killed at exit."""
import asyncio, os, socket, subprocess, sys, tempfile, time, json, argparse, signal, threading

TICK = os.sysconf('SC_CLK_TCK')
procs = []

def free_port():
    s = socket.socket(); s.bind(('127.0.0.1', 0)); p = s.getsockname()[1]; s.close(); return p

def cpu_ticks(pid):
    f = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()
    return int(f[11]) + int(f[12])

def mem(pid):
    rss = pss = 0
    for l in open(f'/proc/{pid}/status'):
        if l.startswith('VmRSS:'): rss = int(l.split()[1])
    for l in open(f'/proc/{pid}/smaps_rollup'):
        if l.startswith('Pss:'): pss = int(l.split()[1])
    return rss, pss

def spawn(cmd, log, stdout=None, env=None):
    e = dict(os.environ); e['RUST_LOG'] = 'warn'; e.update(env or {})
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=stdout or open(log, 'ab'),
                         stderr=open(log, 'ab'), env=e)
    procs.append(p); return p

async def backend(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b'\r\n\r\n')
            writer.write(b'HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n')
    except BaseException:
        writer.close()

async def get_once(port, path='/ready', host='localhost'):
    r, w = await asyncio.wait_for(asyncio.open_connection('127.0.0.1', port), 2)
    w.write(f'GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n'.encode())
    data = await asyncio.wait_for(r.read(), 5); w.close()
    return int(data.split()[1])

async def client(port, host, n, counter, deadline):
    r, w = await asyncio.open_connection('127.0.0.1', port)
    req = f'GET /x HTTP/1.1\r\nHost: {host}\r\n\r\n'.encode()
    while counter[0] < n and time.monotonic() < deadline:
        counter[0] += 1
        w.write(req)
        head = await asyncio.wait_for(r.readuntil(b'\r\n\r\n'), 10)
        if not head.startswith(b'HTTP/1.1 200'): counter[1] += 1
        cl = 0
        for line in head.split(b'\r\n'):
            if line.lower().startswith(b'content-length:'): cl = int(line.split(b':')[1])
        if cl: await r.readexactly(cl)
    w.close()

async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--pair', action='append', required=True, help='name:bindir:accesslog')
    ap.add_argument('--cp-bin', required=True)
    ap.add_argument('--requests', type=int, default=5000)
    ap.add_argument('--rounds', type=int, default=5)
    ap.add_argument('--conns', type=int, default=8)
    ap.add_argument('--idle-wait', type=float, default=2.0)
    ap.add_argument('--hold', type=float, default=0.0)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix='tm-pairs-')
    srv = await asyncio.start_server(backend, '127.0.0.1', 0)
    be = srv.sockets[0].getsockname()[1]
    pairs = []
    for i, spec in enumerate(a.pair):
        name, bindir, alog = spec.split(':')
        pairs.append(dict(name=name, bin=bindir, alog=alog, i=i,
                          ports={k: free_port() for k in ['ai', 'ao', 'aa', 'bi', 'bo', 'ba']}))
    pol = os.path.join(tmp, 'policies'); os.makedirs(pol)
    open(os.path.join(pol, 'mesh.yaml'), 'w').write('trust_domain: cluster.local\ndefault_action: allow\n')
    svcs = []
    for p in pairs:
        for role, port in [('server', p['ports']['bi']), ('client', p['ports']['ai'])]:
            n = f"bench-{role}-{p['i']}"
            svcs.append(f"apiVersion: trustmesh.io/v1\nkind: Service\nmetadata: {{name: {n}, namespace: bench, labels: {{app: {n}}}}}\nspec:\n  identity: spiffe://cluster.local/ns/bench/sa/{n}\n  endpoints: [\"127.0.0.1:{port}\"]\n  ports: [{{port: 80, protocol: http}}]\n")
    open(os.path.join(pol, 'services.yaml'), 'w').write('---\n'.join(svcs))
    data = os.path.join(tmp, 'data'); cpp = free_port()
    spawn([a.cp_bin, 'serve', '--listen', f'127.0.0.1:{cpp}', '--data-dir', data, '--policies', pol], os.path.join(tmp, 'cp.log'))
    for _ in range(300):
        if os.path.exists(os.path.join(data, 'trust-bundle.pem')):
            try:
                socket.create_connection(('127.0.0.1', cpp), 0.2).close(); break
            except OSError: pass
        await asyncio.sleep(0.05)
    for p in pairs:
        for side, role, inb, outb, adm in [('b', 'server', 'bi', 'bo', 'ba'), ('a', 'client', 'ai', 'ao', 'aa')]:
            ident = f"spiffe://cluster.local/ns/bench/sa/bench-{role}-{p['i']}"
            tok = subprocess.run([a.cp_bin, 'token', 'create', '--identity', ident, '--data-dir', data], capture_output=True, text=True, check=True).stdout.strip()
            tf = os.path.join(tmp, f"tok-{p['name']}-{side}"); fd = os.open(tf, os.O_WRONLY | os.O_CREAT, 0o600); os.write(fd, tok.encode()); os.close(fd)
            out = open(os.path.join(tmp, f"access-{p['name']}-{side}.log"), 'ab')
            proc = spawn([os.path.join(p['bin'], 'trustmesh-proxy'), '--control-plane', f'https://127.0.0.1:{cpp}',
                          '--trust-bundle', os.path.join(data, 'trust-bundle.pem'), '--token-file', tf, '--identity', ident,
                          '--app', f'127.0.0.1:{be}', '--inbound', f"127.0.0.1:{p['ports'][inb]}", '--outbound', f"127.0.0.1:{p['ports'][outb]}",
                          '--admin', f"127.0.0.1:{p['ports'][adm]}", '--access-log', p['alog'], '--log-level', 'warn'],
                         os.path.join(tmp, f"proxy-{p['name']}-{side}.log"), stdout=out)
            p[side] = proc.pid
            for _ in range(400):
                try:
                    if await get_once(p['ports'][adm]) == 200: break
                except Exception: pass
                await asyncio.sleep(0.05)
            else:
                sys.exit(f"{p['name']} {side} not ready; see {tmp}")
    host = lambda p: f"bench-server-{p['i']}.bench"
    for p in pairs:  # sanity check through each pair
        for _ in range(20):
            st = await get_once(p['ports']['ao'], '/x', host(p))
        assert st == 200, (p['name'], st)
    await asyncio.sleep(a.idle_wait)
    for p in pairs:
        p['idle'] = {s: mem(p[s]) for s in 'ab'}
        p['ticks'] = 0; p['reqs'] = 0; p['errs'] = 0; p['peak'] = {'a': (0, 0), 'b': (0, 0)}
    for rnd in range(a.rounds):
        order = pairs[rnd % len(pairs):] + pairs[:rnd % len(pairs)]
        for p in order:
            stop = threading.Event()
            def sample(p=p):
                while not stop.is_set():
                    for s in 'ab':
                        r, q = mem(p[s]); pr, pq = p['peak'][s]; p['peak'][s] = (max(r, pr), max(q, pq))
                    time.sleep(0.1)
            t = threading.Thread(target=sample); t.start()
            t0 = cpu_ticks(p['a']) + cpu_ticks(p['b'])
            counter = [0, 0]
            await asyncio.gather(*[client(p['ports']['ao'], host(p), a.requests, counter, time.monotonic() + 60) for _ in range(a.conns)])
            t1 = cpu_ticks(p['a']) + cpu_ticks(p['b'])
            stop.set(); t.join()
            p['ticks'] += t1 - t0; p['reqs'] += counter[0]; p['errs'] += counter[1]
    print(f"{'pair':<12}{'access_log':>11}{'reqs':>8}{'errs':>6}{'cpu us/req A+B':>16}{'idle RSS A/B KiB':>20}{'idle PSS A/B':>16}{'load RSS A/B':>16}{'load PSS A/B':>16}")
    for p in pairs:
        us = p['ticks'] * 1e6 / TICK / max(p['reqs'], 1)
        print(f"{p['name']:<12}{p['alog']:>11}{p['reqs']:>8}{p['errs']:>6}{us:>16.1f}"
              f"{p['idle']['a'][0]:>10}/{p['idle']['b'][0]:<9}{p['idle']['a'][1]:>7}/{p['idle']['b'][1]:<8}"
              f"{p['peak']['a'][0]:>7}/{p['peak']['b'][0]:<8}{p['peak']['a'][1]:>7}/{p['peak']['b'][1]:<8}")
    print('work dir', tmp)
    for p in pairs:
        print(p['name'], 'pids a', p['a'], 'b', p['b'], flush=True)
    await asyncio.sleep(a.hold)

try:
    asyncio.run(main())
finally:
    for p in procs:
        p.kill(); p.wait()
