"""A small program that does things worth seeing under ``auditwatch run``.

It reads a credentials-like file, starts a child Python, connects a socket on
loopback and executes a string. Nothing leaves this machine.

    auditwatch run -- python examples/suspicious.py
"""

from __future__ import annotations

import base64
import socket
import subprocess
import sys
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent


def read_credentials() -> str:
    return (HERE / "data" / ".aws" / "credentials").read_text()


def start_child() -> str:
    out = subprocess.run(
        [sys.executable, "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def talk_to_loopback() -> bytes:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]

    def answer() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"print('hello from the network')")

    t = threading.Thread(target=answer)
    t.start()
    with socket.create_connection(("127.0.0.1", port)) as client:
        payload = client.recv(1024)
    t.join()
    server.close()
    return payload


def main() -> None:
    secret = read_credentials()
    print(f"read {len(secret)} bytes of credentials")
    print(f"child Python {start_child()}")
    payload = talk_to_loopback()
    exec(payload.decode())  # code that came from a socket
    exec(base64.b64decode(b"cHJpbnQoJ2RlY29kZWQgYW5kIHJ1bicp").decode())  # and from base64
    with open(HERE / "data" / "loot.txt", "w") as f:
        f.write("exfiltrated\n")


if __name__ == "__main__":
    main()
