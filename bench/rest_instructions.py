#!/usr/bin/env python3
"""Instructions a REST request costs the server, counted by callgrind.

Runs each onair binary given under `valgrind --tool=callgrind` (roles user
and gateway, rate limits off), sends `GET /v1/users/{id}` with a viewer's
token over one keep-alive connection, first FEW then MANY times in two runs,
and prints (instructions(MANY) - instructions(FEW)) / (MANY - FEW): the
user-space instructions of one request, start-up and shutdown cancelled out.
Instruction counts do not depend on what else the machine is doing, so two
binaries compare to a fraction of a percent on a noisy machine; they leave
out the kernel's share (the socket writes and reads), which is the same for
both when they make the same system calls.

    python3 bench/rest_instructions.py --rounds 2 target/release/onair other/onair

Needs valgrind (Debian's package). Talks only to 127.0.0.1.
"""
import argparse
import http.client
import json
import os
import shutil
import signal
import subprocess
import tempfile


def instructions(binary, count):
    """Total instructions of one server run that answered `count` requests."""
    data = tempfile.mkdtemp(prefix="onair-instructions-")
    out = os.path.join(data, "callgrind.out")
    env = dict(os.environ, ONAIR_LOG_FORMAT="json", ONAIR_GATEWAY_RATE_LIMIT_PER_IP="0",
               ONAIR_GATEWAY_RATE_LIMIT_PER_USER="0", ONAIR_USER_ACCOUNTS_PER_IP_PER_MINUTE="0")
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", binary, "serve",
         "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0", "--data-dir", data,
         "--roles", "user,gateway"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    try:
        address = None
        for line in server.stdout:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("message") == "listening":
                address = record["http"]
                break
        if address is None:
            raise SystemExit(f"{binary} did not start")
        host, port = address.rsplit(":", 1)
        connection = http.client.HTTPConnection(host, int(port), timeout=120)
        connection.request("POST", "/v1/users", body=json.dumps({"displayName": "Bench"}),
                           headers={"content-type": "application/json"})
        created = json.loads(connection.getresponse().read())
        token, user_id = created["accessToken"], created["user"]["id"]
        errors = 0
        for _ in range(count):
            connection.request("GET", f"/v1/users/{user_id}",
                               headers={"authorization": f"Bearer {token}"})
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                errors += 1
        connection.close()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=300)
        total = None
        with open(out) as profile:
            for line in profile:
                if line.startswith("summary:"):
                    total = int(line.split()[1])
        if total is None:
            raise SystemExit(f"no callgrind summary from {binary}")
        return total, errors
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        shutil.rmtree(data, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("binaries", nargs="+")
    parser.add_argument("--few", type=int, default=1000)
    parser.add_argument("--many", type=int, default=6000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print("| round | binary | instructions per request | errors |")
    print("|---|---|---|---|")
    for round_number in range(1, args.rounds + 1):
        for binary in args.binaries:
            few, few_errors = instructions(binary, args.few)
            many, many_errors = instructions(binary, args.many)
            per_request = (many - few) / (args.many - args.few)
            print(f"| {round_number} | {binary} | {per_request:,.0f} | {few_errors + many_errors} |",
                  flush=True)


if __name__ == "__main__":
    main()
