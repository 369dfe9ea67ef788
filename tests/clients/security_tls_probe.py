"""A bare TLS client (Python's ssl module, OpenSSL): connects to a TLS listener, optionally
presenting a client certificate, sends one Kafka ApiVersions v0 request and reads the answer.

Unlike librdkafka, OpenSSL's own client sends the configured certificate even when its issuer is
not among the CA names the server asks for, so this is how a test makes a client really present
a certificate from a foreign CA.

Prints one JSON line: {"ok": true, "tls": "TLSv1.3", "response_bytes": N} when a Kafka answer
came back, else {"ok": false, "stage": "connect|handshake|request|response", "error": "...",
"message": "..."}."""
import argparse, json, socket, ssl, struct

ap = argparse.ArgumentParser()
ap.add_argument("--addr", required=True, help="HOST:PORT")
ap.add_argument("--ca", required=True)
ap.add_argument("--cert")
ap.add_argument("--key")
ap.add_argument("--server-name", default="127.0.0.1")
ap.add_argument("--timeout", type=float, default=10.0)
ap.add_argument("--tls-max", choices=["1.2", "1.3"], help="highest TLS version offered")
a = ap.parse_args()
host, port = a.addr.rsplit(":", 1)

ctx = ssl.create_default_context(cafile=a.ca)
if a.cert:
    ctx.load_cert_chain(a.cert, a.key)
if a.tls_max == "1.2":
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2


def fail(stage, e):
    print(json.dumps({"ok": False, "stage": stage, "error": type(e).__name__, "message": str(e)}), flush=True)
    raise SystemExit(0)


def read_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"EOF after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


try:
    raw = socket.create_connection((host, int(port)), timeout=a.timeout)
except OSError as e:
    fail("connect", e)
try:
    s = ctx.wrap_socket(raw, server_hostname=a.server_name)
except (ssl.SSLError, OSError) as e:
    fail("handshake", e)
# ApiVersions v0: api_key 18, version 0, correlation id 1, client id "probe".
body = struct.pack(">hhih", 18, 0, 1, 5) + b"probe"
try:
    s.sendall(struct.pack(">i", len(body)) + body)
except (ssl.SSLError, OSError) as e:
    fail("request", e)
try:
    (n,) = struct.unpack(">i", read_exact(s, 4))
    resp = read_exact(s, n)
    (corr,) = struct.unpack(">i", resp[:4])
    assert corr == 1, corr
except (ssl.SSLError, OSError, ConnectionError) as e:
    fail("response", e)
print(json.dumps({"ok": True, "tls": s.version(), "response_bytes": n}), flush=True)
