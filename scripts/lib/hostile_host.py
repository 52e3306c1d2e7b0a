#!/usr/bin/env python3
"""A taken host's attacks on a Redoubt server, in a loop, for scripts/load-hostile.

Uses the host's own credential (CONFIG/credential.json). Every loop: idle TCP and TLS
connections held open, a slow-loris request, a PUT announcing 1 TiB that never sends it,
unauthenticated requests with 60 kB paths, a 10 000-ID chunk query, a DELETE of a pack.
Stops after --seconds; prints one line of counts. Only ever connects to 127.0.0.1.
"""
import argparse, json, os, signal, socket, ssl, sys, tempfile, time, urllib.parse

ap = argparse.ArgumentParser()
ap.add_argument("config")
ap.add_argument("--seconds", type=float, default=60)
ap.add_argument("--idle", type=int, default=200)
args = ap.parse_args()
cred = json.load(open(os.path.join(args.config, "credential.json")))
url = urllib.parse.urlparse(cred["url"])
host, port = url.hostname, url.port
assert host in ("127.0.0.1", "localhost"), "loopback only"
tmp = tempfile.mkdtemp()
for name in ("caPEM", "certificatePEM", "keyPEM"):
    open(os.path.join(tmp, name), "w").write(cred[name])


def tls(with_cert=True):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(os.path.join(tmp, "caPEM"))
    ctx.check_hostname = False
    if with_cert:
        ctx.load_cert_chain(os.path.join(tmp, "certificatePEM"), os.path.join(tmp, "keyPEM"))
    s = socket.create_connection((host, port), timeout=10)
    return ctx.wrap_socket(s)


def request(raw, with_cert=True, read=True):
    try:
        s = tls(with_cert)
        s.sendall(raw)
        data = s.recv(4096) if read else b""
        s.close()
        return data.split(b"\r\n", 1)[0]
    except Exception as e:  # refusals by closing are outcomes too
        return repr(e).encode()[:60]


counts = {}
def count(what, outcome):
    key = f"{what}:{outcome.decode(errors='replace')[:40]}"
    counts[key] = counts.get(key, 0) + 1


idle = []
end = time.time() + args.seconds
stopped = False
def stop(*_):
    global stopped
    stopped = True
signal.signal(signal.SIGINT, stop)
signal.signal(signal.SIGTERM, stop)
while time.time() < end and not stopped:
    # Idle connections: bare TCP that never says hello, and TLS that never sends a request.
    while len(idle) < args.idle:
        try:
            idle.append(socket.create_connection((host, port), timeout=5))
            idle.append(tls())
        except Exception as e:
            count("idle-open", repr(e).encode())
            break
    # Slow loris: a request line, then nothing.
    try:
        s = tls(); s.sendall(b"GET /v1/snapshots HTTP/1.1\r\nHost: x\r\n"); idle.append(s)
    except Exception as e:
        count("slowloris", repr(e).encode())
    count("huge-put", request(b"PUT /v1/packs/" + b"0" * 64 + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 1099511627776\r\n\r\n"))
    count("long-path", request(b"GET /v1/" + b"a" * 60000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", with_cert=False))
    body = os.urandom(32 * 10000)
    count("chunk-query", request(b"POST /v1/chunks/query HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body))
    count("delete", request(b"DELETE /v1/packs/" + b"0" * 64 + b" HTTP/1.1\r\nHost: x\r\n\r\n"))
    # Drop the oldest idle connections now and then: the server may have closed them.
    alive = []
    for s in idle:
        try:
            s.setblocking(False)
            if s.recv(1) == b"":
                count("idle", b"closed by server"); s.close(); continue
        except (BlockingIOError, ssl.SSLWantReadError):
            pass
        except Exception as e:
            count("idle", b"closed by server"); s.close(); continue
        alive.append(s)
    idle = alive
    time.sleep(0.2)
for s in idle:
    try: s.close()
    except Exception: pass
print("attacker:", json.dumps(counts, sort_keys=True))
