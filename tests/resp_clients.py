#!/usr/bin/env python3
"""redis-py against ringkv's RESP front end, in RESP2 and RESP3 (run by tests/resp.rs).

Usage: resp_clients.py PORT [OTHER_PORT]
With OTHER_PORT (another node of the same cluster), what one node writes is read
through the other. Exits non-zero with the failed check on the first failure.
"""

import sys
import uuid

import redis


def expect_error(call, fragment):
    try:
        call()
    except redis.ResponseError as error:
        assert fragment in str(error), f"{fragment!r} not in {error!r}"
        return
    raise AssertionError(f"expected an error containing {fragment!r}")


def check(port, protocol, prefix):
    r = redis.Redis(host="127.0.0.1", port=port, protocol=protocol, socket_timeout=60)
    assert r.ping() is True
    assert r.echo(b"hi \r\n there") == b"hi \r\n there"
    key = f"{prefix}:key"
    assert r.get(key) is None
    assert r.set(key, b"v1") is True
    assert r.get(key) == b"v1"
    assert r.set(key, b"v2") is True, "SET overwrites"
    assert r.get(key) == b"v2"
    binary = bytes(range(256)) * 400  # 100 KiB with every byte, CR and LF included
    assert r.set(f"{prefix}:binary", binary)
    assert r.get(f"{prefix}:binary") == binary
    assert r.mset({f"{prefix}:a": b"1", f"{prefix}:b": b"2"}) is True
    assert r.mget(f"{prefix}:a", f"{prefix}:missing", f"{prefix}:b") == [b"1", None, b"2"]
    assert r.exists(f"{prefix}:a", f"{prefix}:b", f"{prefix}:missing", f"{prefix}:a") == 3
    assert r.delete(f"{prefix}:a", f"{prefix}:missing", f"{prefix}:a") == 1
    assert r.exists(f"{prefix}:a") == 0
    assert r.get(f"{prefix}:a") is None
    # A pipeline runs in order: the GET after a SET of the same key sees it.
    pipe = r.pipeline(transaction=False)
    for i in range(50):
        pipe.set(f"{prefix}:p", str(i))
        pipe.get(f"{prefix}:p")
    results = pipe.execute()
    assert results[1::2] == [str(i).encode() for i in range(50)], results
    info = r.info()
    assert info["redis_version"] == "7.0.0", info
    assert info["role"] == "master", info
    assert "ringkv_version" in info, info
    assert r.config_get("save") == {"save": ""}
    assert r.config_get("appendonly") == {"appendonly": "yes"}
    assert r.config_get("maxmemory") == {}
    assert r.client_setname("tester") is True
    assert r.client_getname() in ("tester", b"tester")  # RESP3 replies are not decoded
    assert isinstance(r.client_id(), int)
    assert r.execute_command("SELECT", 0) in (True, b"OK", "OK")
    expect_error(lambda: r.set(key, b"v", ex=10), "does not support SET option EX")
    expect_error(lambda: r.set(key, b"v", nx=True), "does not support SET option NX")
    expect_error(lambda: r.execute_command("SELECT", 1), "DB index is out of range")
    expect_error(lambda: r.execute_command("NOSUCH", "x"), "unknown command 'NOSUCH'")
    expect_error(lambda: r.dbsize(), "does not support DBSIZE")
    expect_error(lambda: r.get(b""), "empty key")
    assert r.get(key) == b"v2", "refused SETs wrote nothing"
    if protocol == 3:
        hello = r.execute_command("HELLO", 3)
        assert hello[b"proto"] == 3 and hello[b"role"] == b"master", hello
    r.close()


def main():
    port = int(sys.argv[1])
    run = uuid.uuid4().hex[:8]  # fresh keys, whatever ran against the node before
    check(port, 2, f"{run}:resp2")
    check(port, 3, f"{run}:resp3")
    if len(sys.argv) > 2:
        other = int(sys.argv[2])
        writer = redis.Redis(host="127.0.0.1", port=port, socket_timeout=60)
        reader = redis.Redis(host="127.0.0.1", port=other, protocol=3, socket_timeout=60)
        for i in range(20):
            assert writer.set(f"{run}:cluster:{i}", f"value {i}")
        assert reader.mget([f"{run}:cluster:{i}" for i in range(20)]) == [
            f"value {i}".encode() for i in range(20)
        ]
        assert reader.delete(f"{run}:cluster:0") == 1
        assert writer.get(f"{run}:cluster:0") is None
    print("resp_clients: ok")


if __name__ == "__main__":
    main()
