#!/usr/bin/python3
"""SCTP reachability over raw sockets, for kernels without SCTP (this one has CONFIG_IP_SCTP unset).

  sctp-probe.py serve PORT...        answers an INIT to any PORT with an INIT-ACK; prints "ready"
  sctp-probe.py probe < targets.json  [{"host": "10.0.0.3", "port": 80, "timeoutMs": 500}, ...]:
                                      sends an INIT to each at once, prints a JSON array of
                                      {"host", "port", "connected", "ms"}

Connected means the INIT-ACK came back with our verification tag and the ports swapped: the
INIT went one way and the answer the other, as the first two packets of an association would.
Without an SCTP stack, a kernel hands SCTP packets to raw sockets and, since one is open, sends
no "protocol unreachable".
"""
import json
import os
import select
import socket
import struct
import sys
import time

IPPROTO_SCTP = 132


def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


CRC_TABLE = _crc32c_table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = CRC_TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def packet(sport, dport, vtag, chunk):
    head = struct.pack("!HHII", sport, dport, vtag, 0)
    body = head + chunk
    # the checksum goes in little-endian, as Linux writes it
    return body[:8] + struct.pack("<I", crc32c(body)) + body[12:]


def init_chunk(kind, tag, cookie=b""):
    params = b""
    if cookie:
        params = struct.pack("!HH", 7, 4 + len(cookie)) + cookie
        params += b"\0" * (-len(params) % 4)
    fixed = struct.pack("!IIHHI", tag, 65535, 1, 1, tag)
    return struct.pack("!BBH", kind, 0, 4 + len(fixed) + len(params)) + fixed + params


def parse(data):
    """IPv4 packet -> (src, sport, dport, vtag, chunk type, initiate tag) or None."""
    ihl = (data[0] & 0x0F) * 4
    if len(data) < ihl + 16:
        return None
    sport, dport, vtag = struct.unpack("!HHI", data[ihl:ihl + 8])
    ctype = data[ihl + 12]
    itag = struct.unpack("!I", data[ihl + 16:ihl + 20])[0] if len(data) >= ihl + 20 else 0
    return socket.inet_ntoa(data[12:16]), sport, dport, vtag, ctype, itag


def serve(ports):
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_SCTP)
    print("ready", flush=True)
    while True:
        data, _ = s.recvfrom(65535)
        p = parse(data)
        if not p:
            continue
        src, sport, dport, _, ctype, itag = p
        if ctype == 1 and dport in ports:
            my_tag = struct.unpack("!I", os.urandom(4))[0] or 1
            s.sendto(packet(dport, sport, itag, init_chunk(2, my_tag, b"weft-cookie")), (src, 0))


def probe(targets):
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_SCTP)
    t0 = time.monotonic()
    waiting = {}
    results = []
    for i, t in enumerate(targets):
        sport = 20000 + (struct.unpack("!H", os.urandom(2))[0] % 40000)
        tag = struct.unpack("!I", os.urandom(4))[0] or 1
        deadline = t0 + t.get("timeoutMs", 1000) / 1000.0
        waiting[(t["host"], t["port"], sport)] = (i, tag, deadline)
        s.sendto(packet(sport, t["port"], 0, init_chunk(1, tag)), (t["host"], 0))
        results.append({"host": t["host"], "port": t["port"], "connected": False})
    while waiting:
        now = time.monotonic()
        for k, (i, _, deadline) in list(waiting.items()):
            if now >= deadline:
                results[i]["ms"] = round((now - t0) * 1000, 1)
                results[i]["error"] = "timeout"
                del waiting[k]
        if not waiting:
            break
        wait = max(0.0, min(d for (_, _, d) in waiting.values()) - now)
        r, _, _ = select.select([s], [], [], wait)
        if not r:
            continue
        data, _ = s.recvfrom(65535)
        p = parse(data)
        if not p:
            continue
        src, sport, dport, vtag, ctype, _ = p
        k = (src, sport, dport)
        if ctype == 2 and k in waiting and waiting[k][1] == vtag:
            i = waiting.pop(k)[0]
            results[i]["connected"] = True
            results[i]["ms"] = round((time.monotonic() - t0) * 1000, 1)
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "serve":
        serve({int(p) for p in sys.argv[2:]})
    elif len(sys.argv) == 2 and sys.argv[1] == "probe":
        probe(json.load(sys.stdin))
    else:
        sys.stderr.write(__doc__)
        sys.exit(2)
