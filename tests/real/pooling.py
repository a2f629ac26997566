"""A pooling HTTP/1.1 client (requests.Session) for the real-client suite.

--url URL --host NAME --idle S: two GETs on one Session with S seconds idle between them;
prints one JSON line {"statuses": [...], "connections": N, "error": ...}, N being how many
connections urllib3 opened (1: the kept-alive connection carried both).
"""
import argparse
import json
import time

import requests
import urllib3.connection

CONNECTS = 0
_connect = urllib3.connection.HTTPConnection.connect


def counting_connect(self):
    global CONNECTS
    CONNECTS += 1
    return _connect(self)


urllib3.connection.HTTPConnection.connect = counting_connect


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--host", required=True)
    p.add_argument("--idle", type=float, required=True)
    args = p.parse_args()
    s = requests.Session()
    statuses, error = [], None
    try:
        for i in range(2):
            if i:
                time.sleep(args.idle)
            r = s.get(args.url, headers={"Host": args.host}, timeout=30)
            statuses.append(r.status_code)
    except requests.RequestException as e:
        error = repr(e)
    print(json.dumps({"statuses": statuses, "connections": CONNECTS, "error": error}))


if __name__ == "__main__":
    main()
