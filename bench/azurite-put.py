#!/usr/bin/env python3
"""The upload ceiling of Azurite on this machine: PUTs one file to a blob as staged blocks
(BLOCK_MB MiB each, IN_FLIGHT at a time, one connection each) and commits the block list, with
nothing else running: no database, no formatting. Shared Key auth, standard library only.

    bench/azurite-put.py CONNECTION_STRING FILE [BLOCK_MB] [IN_FLIGHT]

Prints "seconds bytes".
"""
import base64, hashlib, hmac, http.client, sys, threading, time, urllib.parse, uuid
from datetime import datetime, timezone

cs = dict(p.split("=", 1) for p in sys.argv[1].split(";") if p)
path, block_mb = sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 8
in_flight = int(sys.argv[4]) if len(sys.argv) > 4 else 4
account, key = cs["AccountName"], base64.b64decode(cs["AccountKey"])
endpoint = urllib.parse.urlsplit(cs["BlobEndpoint"])
container = "put" + uuid.uuid4().hex[:12]


def request(conn, method, resource, query, body=b"", headers=None):
    headers = dict(headers or {})
    headers["x-ms-date"] = datetime.now(timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT")
    headers["x-ms-version"] = "2021-10-04"
    length = str(len(body)) if body else ""
    ms = "".join(f"{k}:{v}\n" for k, v in sorted(headers.items()) if k.startswith("x-ms-"))
    url_path = endpoint.path.rstrip("/") + resource
    canon = f"/{account}{url_path}" + "".join(f"\n{k}:{v}" for k, v in sorted(query.items()))
    text = f"{method}\n\n\n{length}\n\n{headers.get('content-type', '')}\n\n\n\n\n\n\n{ms}{canon}"
    sig = base64.b64encode(hmac.new(key, text.encode(), hashlib.sha256).digest()).decode()
    headers["authorization"] = f"SharedKey {account}:{sig}"
    headers["content-length"] = str(len(body))
    conn.request(method, url_path + "?" + urllib.parse.urlencode(query), body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    if resp.status >= 300:
        raise SystemExit(f"{method} {resource} {query}: {resp.status} {data[:300]!r}")


def connect():
    return http.client.HTTPConnection(endpoint.hostname, endpoint.port)


request(connect(), "PUT", f"/{container}", {"restype": "container"})
block = int(block_mb * 1024 * 1024)
ids, lock, total = [], threading.Lock(), 0
f = open(path, "rb")


def worker():
    global total
    conn = connect()
    while True:
        with lock:
            data = f.read(block)
            if not data:
                return
            bid = base64.b64encode(f"{len(ids):010}".encode()).decode()
            ids.append(bid)
            total += len(data)
        request(conn, "PUT", f"/{container}/file", {"comp": "block", "blockid": bid}, data)


t0 = time.monotonic()
threads = [threading.Thread(target=worker) for _ in range(in_flight)]
for t in threads:
    t.start()
for t in threads:
    t.join()
xml = "<?xml version='1.0' encoding='utf-8'?><BlockList>" + "".join(
    f"<Latest>{b}</Latest>" for b in ids) + "</BlockList>"
request(connect(), "PUT", f"/{container}/file", {"comp": "blocklist"}, xml.encode(),
        {"content-type": "application/xml"})
print(f"{time.monotonic() - t0:.2f} {total}")
